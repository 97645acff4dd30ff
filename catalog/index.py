"""The index table: one entity per (index key, record identity), written idempotently, read by partition.

Every index entity carries `s`, the stamp (WAL RowKey) of the operation that last wrote it, and
`x`, true for a tombstone. A write with a stamp not newer than the stored one is a no-op, and the
stored entity is only replaced through its ETag: so applying the WAL in any order, any number of
times, with crashes between the fan-out writes, converges to "each identity's latest operation".
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import ConflictError, StorageError, TransientStorageError, ValidationError
from .keys import (
    MAX_KEY_UTF16,
    SEP,
    RecordKeys,
    check_read_value,
    encode_part,
    is_valid_table_key,
    normalize,
    partition_key,
    row_range,
    utf16_len,
    value_text,
)
from .settings import Schema
from .store import Entity, TableStore, transactions

STAMP, TOMBSTONE = "s", "x"
META_PARTITION = "meta"  # no index partition is called that: every index PartitionKey holds a space
MAX_RACE_RETRIES = 10
MIN_TRANSACTION = 4  # entities of one partition worth a range read and a transaction


@dataclass(frozen=True)
class Page:
    items: list[dict]
    continuation: str | None


class Index:
    def __init__(self, store: TableStore, table: str, schema: Schema):
        self.store = store
        self.table = table
        self.schema = schema
        self._existing = 0.0  # moving share of written entities that existed already
        self._lock = threading.Lock()

    def create(self) -> None:
        self.store.create_table(self.table)

    def sibling(self, table: str, schema: Schema) -> Index:
        """Another index table on the same storage (the table `catalog reindex` builds)."""
        return Index(self.store, table, schema)

    # -- the table's own bookkeeping (partition `meta`, see index_meta.py) ----------------------
    def meta_get(self, row: str) -> Entity | None:
        return self.store.get(self.table, META_PARTITION, row)

    def meta_insert(self, row: str, props: Mapping[str, Any]) -> str:
        """Create a meta row; ConflictError if it exists. Returns its ETag."""
        return self.store.insert(self.table, {**props, "PartitionKey": META_PARTITION, "RowKey": row})

    def meta_replace(self, row: str, props: Mapping[str, Any], etag: str) -> str:
        return self.store.replace(self.table, {**props, "PartitionKey": META_PARTITION, "RowKey": row}, etag)

    def meta_merge(self, row: str, props: Mapping[str, Any]) -> None:
        self.store.merge(self.table, {**props, "PartitionKey": META_PARTITION, "RowKey": row})

    # -- write -----------------------------------------------------------------------------
    def write(self, keys: RecordKeys, stamp: str, data: bytes | None) -> int:
        """Write a record (data) or a tombstone (None) at every index key. Returns entities changed."""
        return self.write_many([(keys, stamp, data)])

    def write_many(self, items: Sequence[tuple[RecordKeys, str, bytes | None]], *,
                   pool: Executor | None = None) -> int:
        """Write records (data) and tombstones (None) of one apply unit at every index key, batched:
        the entities of each partition go out as entity-group transactions of up to MAX_BATCH (the
        current stamps of a batch read first with one range query, so an update costs no failed
        insert), on `pool` when given (its size bounds the writes in flight of every unit that
        shares it), else one after the other. Returns the entities changed.

        Same rules as one by one: an entity is replaced only through its ETag and only by a newer
        stamp, so any order, any repetition and a crash anywhere converge. Two phases keep what
        `holding` relies on: a record's last index key is written only once all its other keys
        are, so an operation whose last entity is there has been applied everywhere."""
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        last_pk: dict[str, str] = {}
        for keys, stamp, data in items:
            props: dict[str, Any] = {STAMP: stamp, TOMBSTONE: data is None}
            if data is not None:
                props.update(codec.chunk_properties(data))
            last_pk[keys.row_key] = keys.partition_keys[-1]
            for pk in keys.partition_keys:
                held = newest.get((pk, keys.row_key))
                if held is None or held[STAMP] < stamp:  # a unit may hold one identity twice
                    newest[(pk, keys.row_key)] = {"PartitionKey": pk, "RowKey": keys.row_key, **props}
        phases: tuple[dict[str, list[dict]], dict[str, list[dict]]] = ({}, {})
        for (pk, rk), entity in newest.items():
            phases[1 if last_pk[rk] == pk else 0].setdefault(pk, []).append(entity)
        changed = 0
        for phase in phases:
            changed += self._write_partitions(phase, pool)
        return changed

    def _write_partitions(self, partitions: dict[str, list[dict]], pool: Executor | None) -> int:
        work = [batch for entities in partitions.values()
                for batch in transactions(sorted(entities, key=lambda e: e["RowKey"]))]
        # Multi-entity batches first: what they find tells the single entities whether to read first.
        work.sort(key=len, reverse=True)
        if pool is None or len(work) <= 1:
            return sum(self._write_batch(batch) for batch in work)
        return sum(pool.map(self._write_batch, work))

    def _write_batch(self, batch: list[dict]) -> int:
        """One partition's batch: one transaction where the current stamps allow, else one by one."""
        if len(batch) < MIN_TRANSACTION and not (len(batch) > 1 and self._existing >= 0.5):
            # A transaction costs a range read too: for two or three new entities, inserting each
            # is as few requests and cheaper ones (for updates it is not: they read anyway).
            return sum(self._write_one(e, try_insert_first=self._insert_first(e)) for e in batch)
        pk = batch[0]["PartitionKey"]
        current = {e["RowKey"]: e for e in self.store.query(self.table, pk, rk_ge=batch[0]["RowKey"],
                                                             rk_le=batch[-1]["RowKey"], select=(STAMP,))}
        self._seen(existing=len(current), total=len(batch))
        creates: list[dict] = []
        replaces: list[tuple[dict, str]] = []
        for entity in batch:
            held = current.get(entity["RowKey"])
            if held is None:
                creates.append(entity)
            elif str(held.get(STAMP, "")) < entity[STAMP]:
                if held.etag is None:  # every store returns what it read with its ETag
                    raise StorageError(f"index entity {pk!r}/{entity['RowKey']!r}: read without an ETag")
                replaces.append((entity, held.etag))
        if not creates and not replaces:
            return 0  # the same or newer operations are there already
        try:
            self.store.write_batch(self.table, creates, replaces)
            return len(creates) + len(replaces)
        except ConflictError:  # another applier wrote in between: this batch one by one
            return sum(self._write_one(e, try_insert_first=e["RowKey"] not in current) for e in batch)

    def _seen(self, *, existing: int, total: int) -> None:
        # How many of the entities written lately existed already: updates read before they
        # write, new records insert at once (a wrong guess costs one request, never correctness).
        with self._lock:
            self._existing = 0.8 * self._existing + 0.2 * (existing / total)

    def _insert_first(self, entity: dict) -> bool:
        if entity[TOMBSTONE]:
            return False  # a delete's entity exists almost always
        return self._existing < 0.5

    def _write_one(self, entity: dict, try_insert_first: bool) -> int:
        stamp = entity[STAMP]
        insert_next = try_insert_first
        for _ in range(MAX_RACE_RETRIES):
            if insert_next:
                try:
                    self.store.insert(self.table, entity)
                    self._seen(existing=0, total=1)
                    return 1
                except ConflictError:
                    pass  # it exists: compare stamps below
            current = self.store.get(self.table, entity["PartitionKey"], entity["RowKey"])
            if current is None:
                insert_next = True
                continue
            self._seen(existing=1, total=1)
            if str(current.get(STAMP, "")) >= stamp:
                return 0  # the same or a newer operation is already there
            if current.etag is None:  # every store returns an entity it read with its ETag
                raise StorageError(f"index entity {entity['PartitionKey']!r}/{entity['RowKey']!r}: "
                                   "read without an ETag, cannot replace it conditionally")
            try:
                self.store.replace(self.table, entity, current.etag)
                return 1
            except ConflictError:
                insert_next = False  # another applier wrote in between: read again
        raise TransientStorageError(f"index entity {entity['PartitionKey']!r}/{entity['RowKey']!r}: "
                                    f"gave up after {MAX_RACE_RETRIES} concurrent-write retries")

    def holding(self, keys: RecordKeys, stamp: str) -> Entity | None:
        """The last index entity of `write(keys, stamp, ...)` if that write has taken effect (write() goes
        through the partition keys in order, so the last is written last) holds this stamp or a
        newer one. A newer stamp is the same identity's later operation (identity includes every
        index value, so it has the same keys), whose applier passed every earlier key first. None
        if it has not."""
        current = self.store.get(self.table, keys.partition_keys[-1], keys.row_key)
        return current if current is not None and str(current.get(STAMP, "")) >= stamp else None

    def collect_tombstone(self, pk: str, rk: str, stamp: str) -> bool:
        """Delete a tombstone if it is still the one `stamp` wrote."""
        current = self.store.get(self.table, pk, rk)
        if current is None or not current.get(TOMBSTONE) or current.get(STAMP) != stamp:
            return False
        try:
            self.store.delete(self.table, pk, rk, etag=current.etag)
            return True
        except ConflictError:
            return False  # rewritten since we read it: not ours to collect

    # -- read ------------------------------------------------------------------------------
    def resolve_filters(self, filters: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not filters:
            raise ValidationError("at least one index key filter is required "
                                  f"(index keys: {', '.join(self.schema.index_keys)})")
        resolved = []
        for field, value in filters.items():
            if field not in self.schema.index_keys:
                raise ValidationError(f"{field!r} is not an index key (index keys: "
                                      f"{', '.join(self.schema.index_keys)})", field=field)
            text = normalize(value_text(value, field), self.schema.case_sensitive)
            check_read_value(text, field, room=MAX_KEY_UTF16 - utf16_len(encode_part(field)) - len(SEP))
            resolved.append((field, text))
        return resolved

    def query(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              limit: int | None = None, continuation: str | None = None) -> Page:
        """AND of equality filters, served from one partition (the first filter's)."""
        resolved = self.resolve_filters(filters)
        if limit is not None and limit < 1:
            raise ValidationError("limit must be a positive integer")
        low, high = row_range(row_from, row_to, self.schema.case_sensitive)
        field, text = resolved[0]
        pk = partition_key(field, text)
        after = decode_continuation(continuation, pk) if continuation else None
        page_size = min(1000, limit + 1) if limit else 1000
        items: list[dict] = []
        last_rk: str | None = None
        for e in self.store.query(self.table, pk, rk_ge=low, rk_gt=after, rk_lt=high,
                                  equals={TOMBSTONE: False}, page_size=page_size):
            record = codec.decode_payload(e)
            if not self._matches(record, resolved[1:]):
                continue
            if limit is not None and len(items) == limit:
                # limit >= 1, so at least one item (and its RowKey) came before this one
                assert last_rk is not None, "a full page without a last RowKey"
                return Page(items, encode_continuation(pk, last_rk))
            items.append(record)
            last_rk = e["RowKey"]
        return Page(items, None)

    def live(self, pk: str, *, rk_ge: str | None = None, rk_lt: str | None = None) -> list[Entity]:
        """The entities of one index partition that are not tombstones (a RowKey range optional)."""
        return list(self.store.query(self.table, pk, rk_ge=rk_ge, rk_lt=rk_lt, equals={TOMBSTONE: False}))

    def records(self) -> Iterator[Entity]:
        """Every current record once: the live entities under the first index key, in key order.
        For tools (export, reindex), never on a request path."""
        first = encode_part(self.schema.index_keys[0])
        for e in self.store.scan_table(self.table, pk_ge=first + SEP, pk_lt=first + "!", page_size=1000):
            if not e.get(TOMBSTONE):
                yield e

    def entities(self) -> Iterator[Entity]:
        """Every entity of the table, bookkeeping rows included, in key order (verify reads it all)."""
        return self.store.scan_table(self.table, page_size=1000)

    def remove(self, pk: str, rk: str, etag: str | None) -> None:
        """Delete one entity if it still has this ETag (ConflictError if not): verify's repair."""
        self.store.delete(self.table, pk, rk, etag=etag)

    def is_empty(self) -> bool:
        return next(iter(self.store.scan_table(self.table, page_size=1)), None) is None

    def iter_all(self, filters: Mapping[str, Any], **kw) -> Iterator[dict]:
        page = self.query(filters, **kw)
        yield from page.items
        while page.continuation:
            page = self.query(filters, continuation=page.continuation, **kw)
            yield from page.items

    def _matches(self, record: Mapping[str, Any], others: list[tuple[str, str]]) -> bool:
        for field, text in others:
            if field not in record:
                return False
            try:
                if normalize(value_text(record[field], field), self.schema.case_sensitive) != text:
                    return False
            except ValidationError:
                return False
        return True


TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2800  # a RowKey of 512 UTF-16 units is at most 1,536 bytes of UTF-8, base64 adds a third
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_TOKEN_CHARS}}}")


def _partition_tag(pk: str) -> str:
    return hashlib.sha256(pk.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_continuation(pk: str, rk: str) -> str:
    """An opaque token: where the next page starts (a RowKey) and a tag of the partition it
    belongs to. Not secret (it names a position the caller could query anyway), but checked."""
    raw = json.dumps({"v": TOKEN_VERSION, "p": _partition_tag(pk), "r": rk}, ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_continuation(token: str, pk: str) -> str:
    """The RowKey a token resumes after; ValidationError (400) for anything this query did not issue."""
    def invalid(why: str) -> ValidationError:
        return ValidationError(f"invalid continuation token: {why}; pass the continuation of the previous "
                               "page of the same query unchanged", field="continuation")

    if not _TOKEN.fullmatch(token):
        raise invalid(f"expected up to {MAX_TOKEN_CHARS} URL-safe base64 characters")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid("not base64") from None
    try:
        data = codec.parse_json(raw, max_depth=1, what="token")
    except ValidationError:
        raise invalid("not one of ours") from None
    if not isinstance(data, dict) or set(data) != {"v", "p", "r"} or data["v"] != TOKEN_VERSION:
        raise invalid("not one of ours")
    rk = data["r"]
    if not isinstance(rk, str) or not is_valid_table_key(rk) or SEP not in rk:
        raise invalid("not one of ours")
    if data["p"] != _partition_tag(pk):
        raise invalid("it belongs to another query")
    return rk
