"""The index table: one entity per (index key, record identity), written idempotently, read by partition.

Every index entity carries `s`, the stamp (WAL RowKey) of the operation that last wrote it, and
`x`, true for a tombstone. A write with a stamp not newer than the stored one is a no-op, and the
stored entity is only replaced through its ETag: so applying the WAL in any order, any number of
times, with crashes between the fan-out writes, converges to "each identity's latest operation".
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import ConflictError, StorageError, TransientStorageError
from .keys import SEP, RecordKeys, encode_part
from .planner import TOMBSTONE, Page, Reader, ReadPlan, plan_read
from .settings import Schema
from .store import Entity, TableStore, transactions
from .wal import SHARDS, parse_operation_id

STAMP = "s"  # TOMBSTONE ("x") is defined with the read path, which filters on it
META_PARTITION = "meta"  # no index partition is called that: every index PartitionKey holds a space
MAX_RACE_RETRIES = 10
MIN_TRANSACTION = 4  # entities of one partition worth a range read and a transaction


@dataclass(frozen=True)
class IndexWrite:
    """What one WAL entry writes: the record (`data`), or a tombstone (None), at every index key of
    its identity, and the version it adds to the identity's history: (kind, the record put or the
    record a delete removed), or None for a write that is no version (a reindex's tombstone)."""

    keys: RecordKeys
    stamp: str
    data: bytes | None
    history: tuple[str, bytes] | None = None


# History: one entity per version of an identity, RowKey `<fingerprint> <stamp>`, in the history
# partition of the WAL shard the version was written in: `h00`..`h15` (no index partition is called
# that: every index PartitionKey holds a space). So the versions one apply unit writes share a
# partition and go out as few transactions (a bulk operation, a group of one-record writes and a
# library client each write one shard), and an identity's versions are one RowKey range in each of
# the 16 partitions, read together: the cost of a history is its versions, never the catalog's.
HISTORY_PREFIX = "h"


def fingerprint_of(keys: RecordKeys) -> str:
    return keys.row_key.rsplit(SEP, 1)[1]


def history_partition(shard: int) -> str:
    return f"{HISTORY_PREFIX}{shard:02d}"


def version_key(keys: RecordKeys, stamp: str) -> tuple[str, str]:
    """(PartitionKey, RowKey) of the history row of the version `stamp` wrote."""
    return history_partition(parse_operation_id(stamp.rsplit("-", 1)[0])), f"{fingerprint_of(keys)}{SEP}{stamp}"


def history_entity(keys: RecordKeys, stamp: str, kind: str, record: bytes) -> dict:
    pk, rk = version_key(keys, stamp)
    return {"PartitionKey": pk, "RowKey": rk, "k": kind, **codec.chunk_properties(record)}


def version_batches(rows: Iterable[dict]) -> list[list[dict]]:
    """History rows cut into transactions: by partition, each version once, in RowKey order."""
    by_partition: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_partition.setdefault(row["PartitionKey"], {})[row["RowKey"]] = row
    return [batch for partition in by_partition.values()
            for batch in transactions(sorted(partition.values(), key=lambda e: e["RowKey"]))]


class Index:
    def __init__(self, store: TableStore, table: str, schema: Schema):
        self.store = store
        self.table = table
        self.schema = schema
        self._existing = 0.0  # moving share of written entities that existed already
        self._lock = threading.Lock()
        self.reader = Reader(self)

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
    def write(self, keys: RecordKeys, stamp: str, data: bytes | None, history: tuple[str, bytes] | None = None) -> int:
        """Write a record (data) or a tombstone (None) at every index key. Returns entities changed."""
        return self.write_many([IndexWrite(keys, stamp, data, history)])

    def write_many(self, items: Sequence[IndexWrite], *, pool: Executor | None = None) -> int:
        """Write records (data) and tombstones (None) of one apply unit at every index key, batched:
        the entities of each partition go out as entity-group transactions of up to MAX_BATCH (the
        current stamps of a batch read first with one range query, so an update costs no failed
        insert), on `pool` when given (its size bounds the writes in flight of every unit that
        shares it), else one after the other. Returns the entities changed.

        Same rules as one by one: an entity is replaced only through its ETag and only by a newer
        stamp, so any order, any repetition and a crash anywhere converge. Two phases keep what
        `holding` relies on: a record's last index key is written only once all its other keys
        are, so an operation whose last entity is there has been applied everywhere.

        Each item's `history` (its kind and record) is written too, in the first phase: one row per
        version (history_entity), created in transactions per history partition (_write_versions)."""
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        last_pk: dict[str, str] = {}
        versions = [history_entity(i.keys, i.stamp, *i.history) for i in items if i.history is not None]
        for item in items:
            keys, stamp, data = item.keys, item.stamp, item.data
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
        for phase, history in zip(phases, (versions, []), strict=True):
            changed += self._write_partitions(phase, pool, history)
        return changed

    def _write_partitions(self, partitions: dict[str, list[dict]], pool: Executor | None,
                          history: list[dict]) -> int:
        work: list[tuple[Callable[[list[dict]], int], list[dict]]] = [
            (self._write_batch, batch) for entities in partitions.values()
            for batch in transactions(sorted(entities, key=lambda e: e["RowKey"]))]
        # Multi-entity batches first: what they find tells the single entities whether to read first.
        work.sort(key=lambda w: len(w[1]), reverse=True)
        work += [(self._write_versions, batch) for batch in version_batches(history)]
        if pool is None or len(work) <= 1:
            return sum(write(batch) for write, batch in work)
        return sum(pool.map(lambda w: w[0](w[1]), work))

    def _write_versions(self, batch: list[dict]) -> int:
        """History rows of one partition. A version never changes, so a row that exists is already
        right: create them all in one transaction; if some exist (a repeated delivery), read which
        (one range query) and create the others. Creates, not upserts: Azurite refuses an upsert of
        an entity near 1 MiB that Azure accepts (it counts the binary as base64), not a create."""
        for _ in range(MAX_RACE_RETRIES):
            try:
                if len(batch) == 1:
                    self.store.insert(self.table, batch[0])
                else:
                    self.store.insert_batch(self.table, batch)
                return 0  # history rows are not counted as index entities changed
            except ConflictError:
                if len(batch) == 1:
                    return 0
            present = {e["RowKey"] for e in self.store.query(
                self.table, batch[0]["PartitionKey"], rk_ge=batch[0]["RowKey"], rk_le=batch[-1]["RowKey"],
                select=("k",))}
            batch = [e for e in batch if e["RowKey"] not in present]
            if not batch:
                return 0
        raise TransientStorageError(f"history rows of {batch[0]['PartitionKey']!r}: gave up after "
                                    f"{MAX_RACE_RETRIES} concurrent-write retries")

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

    def has_version(self, keys: RecordKeys, stamp: str) -> bool:
        """Whether the history holds the version `stamp` wrote (one read)."""
        return self.store.get(self.table, *version_key(keys, stamp)) is not None

    def write_versions(self, rows: Sequence[dict]) -> None:
        """History rows (history_entity) written apart from their index entities (the mark buffer's)."""
        for batch in version_batches(rows):
            self._write_versions(batch)

    def history(self, keys: RecordKeys) -> list[Entity]:
        """Every version of one identity, oldest first: one RowKey range in each history partition,
        read together, so the cost grows with the identity's versions, never with the catalog."""
        low, high = fingerprint_of(keys) + SEP, fingerprint_of(keys) + "!"

        def shard(s: int) -> list[Entity]:
            return list(self.store.query(self.table, history_partition(s), rk_gt=low, rk_lt=high))
        versions = [v for found in self.reader.each(shard, range(SHARDS)) for v in found]
        return sorted(versions, key=lambda v: v["RowKey"])

    # -- read (planned in planner.py) -----------------------------------------------------------
    def plan(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
             row_prefix: str | None = None) -> ReadPlan:
        return plan_read(self.schema, filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)

    def query(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None, fields: Sequence[str] | None = None, limit: int | None = None,
              continuation: str | None = None) -> Page:
        """AND of equality filters, served from the smallest of the filtered index partitions."""
        plan = self.plan(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        return self.reader.page(plan, limit=limit, continuation=continuation, fields=fields)

    def count(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None) -> int:
        return self.reader.count(self.plan(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix))

    def iter_all(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
                 row_prefix: str | None = None) -> Iterator[dict]:
        return self.reader.records(self.plan(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix))

    def close(self) -> None:
        self.reader.close()

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
