"""In-memory TableStore for fast property tests. The contract suite keeps it honest against Azurite."""
from __future__ import annotations

import itertools
import threading
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import ConflictError, StorageError, TableNotFoundError
from ..store import Entity


class MemoryTableStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        # table -> PartitionKey -> (sorted RowKeys, RowKey -> (properties, ETag, write time))
        self._tables: dict[str, dict[str, tuple[list[str], dict[str, tuple[dict, str, datetime]]]]] = {}
        self._etags = itertools.count(1)

    def _table(self, table: str):
        try:
            return self._tables[table]
        except KeyError:
            raise TableNotFoundError(f"table {table!r} does not exist") from None

    def _partition(self, table: str, pk: str):
        return self._table(table).setdefault(pk, ([], {}))

    def create_table(self, table: str) -> None:
        with self._lock:
            self._tables.setdefault(table, {})

    def get(self, table: str, pk: str, rk: str) -> Entity | None:
        with self._lock:
            found = self._partition(table, pk)[1].get(rk)
            return Entity(*found) if found else None

    def _put(self, table: str, entity: Mapping[str, Any]) -> str:
        keys, rows = self._partition(table, entity["PartitionKey"])
        rk = entity["RowKey"]
        if rk not in rows:
            insort(keys, rk)
        etag = f'W/"{next(self._etags)}"'
        rows[rk] = (dict(entity), etag, datetime.now(UTC))
        return etag

    def insert(self, table: str, entity: Mapping[str, Any], *, timeout: int | None = None) -> str:
        with self._lock:
            if entity["RowKey"] in self._partition(table, entity["PartitionKey"])[1]:
                raise ConflictError("entity already exists")
            return self._put(table, entity)

    def replace(self, table: str, entity: Mapping[str, Any], etag: str) -> str:
        with self._lock:
            found = self._partition(table, entity["PartitionKey"])[1].get(entity["RowKey"])
            if found is None or found[1] != etag:
                raise ConflictError("entity changed or is gone")
            return self._put(table, entity)

    def merge(self, table: str, entity: Mapping[str, Any]) -> None:
        with self._lock:
            found = self._partition(table, entity["PartitionKey"])[1].get(entity["RowKey"])
            merged = {**(found[0] if found else {}), **entity}
            self._put(table, merged)

    def merge_batch(self, table: str, entities: Sequence[Mapping[str, Any]]) -> None:
        if len({e["PartitionKey"] for e in entities}) > 1:
            raise StorageError("a batch holds entities of one partition")
        if len({e["RowKey"] for e in entities}) != len(entities):
            raise StorageError("an entity can appear only once in a batch")
        with self._lock:
            for e in entities:
                self.merge(table, e)

    def delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        with self._lock:
            keys, rows = self._partition(table, pk)
            found = rows.get(rk)
            if found is None:
                return  # as Azure's SDK: deleting what is gone is not an error
            if etag is not None and found[1] != etag:
                raise ConflictError("entity changed")
            del rows[rk]
            keys.pop(bisect_left(keys, rk))

    def query(self, table: str, pk: str, *, rk_gt: str | None = None, rk_ge: str | None = None,
              rk_lt: str | None = None, rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
              page_size: int | None = None, select: Sequence[str] | None = None) -> Iterator[Entity]:
        with self._lock:
            keys, rows = self._partition(table, pk)
            snapshot = [(rk, rows[rk]) for rk in list(keys)]
        for rk, (props, etag, written) in snapshot:
            if rk_gt is not None and not rk > rk_gt:
                continue
            if rk_ge is not None and not rk >= rk_ge:
                continue
            if rk_lt is not None and not rk < rk_lt or rk_le is not None and not rk <= rk_le:
                break
            if equals and any(props.get(k) != v for k, v in equals.items()):
                continue
            if select:
                props = {k: v for k, v in props.items() if k in ("PartitionKey", "RowKey", *select)}
            yield Entity(props, etag, written)

    def query_page(self, table: str, pk: str, *, page_size: int, resume: object | None = None,
                   rk_gt: str | None = None, rk_ge: str | None = None, rk_lt: str | None = None,
                   rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
                   select: Sequence[str] | None = None) -> tuple[list[Entity], object | None]:
        # The token is the RowKey the next page starts at; like Azure's, only this query's bounds give it meaning.
        if resume is not None:
            if not isinstance(resume, str):
                raise StorageError("not a continuation of this store")
            rk_ge = resume if rk_ge is None else max(rk_ge, resume)
        found = self.query(table, pk, rk_gt=rk_gt, rk_ge=rk_ge, rk_lt=rk_lt, rk_le=rk_le, equals=equals,
                           select=select)
        page = list(itertools.islice(found, page_size))
        following = next(found, None)
        return page, (following["RowKey"] if following is not None else None)

    def insert_batch(self, table: str, entities: Sequence[Mapping[str, Any]], *,
                     timeout: int | None = None) -> None:
        if not entities:
            return
        if len(entities) > 100 or len({e["PartitionKey"] for e in entities}) != 1:
            raise StorageError("a batch holds 1-100 entities of one partition")
        with self._lock:
            rows = self._partition(table, entities[0]["PartitionKey"])[1]
            if len({e["RowKey"] for e in entities}) != len(entities):
                raise StorageError("an entity can appear only once in a batch")
            if any(e["RowKey"] in rows for e in entities):
                raise ConflictError("an entity of the batch already exists")
            for e in entities:
                self._put(table, e)

    # helpers for tests
    def write_batch(self, table: str, creates: Sequence[Mapping[str, Any]],
                    replaces: Sequence[tuple[Mapping[str, Any], str]], *, timeout: int | None = None) -> list[str]:
        entities = [*creates, *(e for e, _ in replaces)]
        if not entities:
            return []
        if len(entities) > 100 or len({e["PartitionKey"] for e in entities}) != 1:
            raise StorageError("a batch holds 1-100 entities of one partition")
        if len({e["RowKey"] for e in entities}) != len(entities):
            raise StorageError("an entity can appear only once in a batch")
        with self._lock:
            rows = self._partition(table, entities[0]["PartitionKey"])[1]
            if any(e["RowKey"] in rows for e in creates):
                raise ConflictError("an entity of the batch already exists")
            if any(e["RowKey"] not in rows or rows[e["RowKey"]][1] != etag for e, etag in replaces):
                raise ConflictError("an entity of the batch changed or is gone")
            return [self._put(table, e) for e in entities]

    def scan_table(self, table: str, *, pk_ge: str | None = None, pk_lt: str | None = None,
                   page_size: int | None = None) -> Iterator[Entity]:
        """Every entity of the table (optionally a PartitionKey range), in key order (a snapshot)."""
        with self._lock:
            snapshot = [Entity(*row) for pk, part in sorted(self._table(table).items())
                        if (pk_ge is None or pk >= pk_ge) and (pk_lt is None or pk < pk_lt)
                        for _, row in sorted(part[1].items())]
        yield from snapshot


class MemoryQueue:
    def __init__(self, name: str):
        self.name = name
        self.messages: list[str] = []
        self._lock = threading.Lock()

    def create(self) -> None:
        pass

    def send(self, text: str) -> None:
        with self._lock:
            self.messages.append(text)

    def depth(self) -> int:
        return len(self.messages)
