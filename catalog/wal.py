"""The write-ahead log: the permanent source of truth, sharded, in its own table.

Layout of the WAL table:
- `wal00`..`wal15` (one partition per shard): an operation's entries, RowKey `<op id>-<seq>`, and
  its header, RowKey `<op id>` (so it sorts just before its entries). The op id starts with the
  acceptance time, so RowKeys sort by acceptance time and an entry's RowKey is its *stamp*: the
  total order the index converges to.
- `meta`: the schema locked for each index table it feeds (`schema-<table>`), each shard's
  checkpoint (`checkpoint-wal07`) and
  tombstone-collection mark (`collected-wal07`).
- `failed`: one entity per operation that had an entry the catalog could not apply.

Bounded writes: every WAL write carries a server-side timeout and a bounded client (one retry,
adapters.azure.bounded_write), and an append starts a write only while it can still land within
WRITE_DEADLINE of its stamp's time (settings.py has the argument); else the request fails. The
sweep and the change feed trust shards up to now - the settle window (the deadline plus clock skew).
"""
from __future__ import annotations

import heapq
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import codec, settings
from .codec import printable
from .errors import (
    ConflictError,
    EntryError,
    NotFoundError,
    SchemaMismatchError,
    TableNotFoundError,
    TransientStorageError,
    ValidationError,
    WalLayoutError,
)
from .settings import Schema
from .store import Entity, TableStore, transactions

SHARDS = 16
# How late a WAL row can land after the time in its stamp, and the settle window that follows
# (the argument is in settings.py, next to the client bounds it rests on).
WRITE_DEADLINE = timedelta(seconds=settings.WRITE_DEADLINE)
WRITE_BOUND = timedelta(seconds=settings.WRITE_BOUND)
SETTLE_WINDOW = timedelta(seconds=settings.DEFAULT_SETTLE_SECONDS)
SERVER_TIMEOUT = settings.SERVER_TIMEOUT
META = "meta"
FAILED = "failed"
SCHEMA_ROW = "schema"
SCHEMA_VERSION = 1

# Every stamp and operation id starts with the year's digits, so every WAL row sorts below ":";
# other rows kept in a shard's partition (idempotency.py) sort above it.
STAMP_END = ":"

PUT, DELETE, HEADER = "put", "del", "op"
PENDING, APPLIED, FAILED_STATUS = "pending", "applied", "failed"

_TS_FORMAT = "%Y%m%dT%H%M%S%fZ"
_OP_ID = re.compile(r"^\d{8}T\d{12}Z-(\d{2})[0-9a-f]{10}$")


def shard_partition(shard: int) -> str:
    return f"wal{shard:02d}"


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_time(value: str | datetime) -> datetime:
    """An ISO 8601 time (the seed's recover format too) or a datetime; naive means UTC. Returned in
    UTC; ValidationError for anything else, a time UTC cannot hold included (0001-01-01T00:00+14:00)."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = value.strip() if isinstance(value, str) else ""
        try:
            if not text.isascii() or len(text) > 40:
                raise ValueError("not ASCII")
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"not an ISO 8601 time: {printable(str(value))}", field="since") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        moment + timedelta(days=1)  # within range on both sides, so ts() and windows around it work
        moment - timedelta(days=1)
    except OverflowError:
        raise ValidationError(f"{moment.isoformat()} is outside the times UTC can represent", field="since") from None
    return moment


def time_of(stamp: str) -> datetime:
    return datetime.strptime(stamp[:22], _TS_FORMAT).replace(tzinfo=UTC)


def parse_operation_id(op_id: str) -> int:
    """The shard of an operation id; ValidationError if it is not one."""
    m = _OP_ID.fullmatch(op_id) if isinstance(op_id, str) else None
    if not m or int(m.group(1)) >= SHARDS:
        raise ValidationError(f"{op_id!r} is not an operation id")
    return int(m.group(1))


@dataclass(frozen=True)
class WalEntry:
    """One logged record operation. `stamp` (its RowKey) orders it against every other entry."""

    shard: int
    stamp: str
    op_id: str
    kind: str  # PUT or DELETE
    entity: Mapping[str, Any]

    def payload(self) -> Any:
        return codec.decode_payload(self.entity)

    def record(self) -> dict:
        """The record a put writes or a delete removes. EntryError if no schema could ever apply
        this entry (an unknown kind, a payload that is not a JSON object): the one check every
        applier (materializer, reindex, verify) makes."""
        if self.kind not in (PUT, DELETE):
            raise EntryError(f"entry {self.stamp}: unknown kind {self.kind!r}")
        payload = self.payload()
        if not isinstance(payload, dict):
            raise EntryError(f"entry {self.stamp}: payload is not a JSON object")
        return payload


@dataclass(frozen=True)
class PendingEntry:
    kind: str
    data: bytes  # JSON: the record for PUT, the deleted record (at least its key fields) for DELETE


def _now() -> datetime:
    return datetime.now(UTC)


def is_status_entity(e: Mapping[str, Any]) -> bool:
    """An operation's header, or the single entry of a one-entry operation (it carries the status)."""
    return e.get("kind") == HEADER or "status" in e


def _schema_of(e: Mapping[str, Any]) -> Schema:
    """The schema of a lock, refused when the WAL was written with another shard count: its
    operations would be looked for in the wrong partitions and the sweep would miss shards."""
    shards = e.get("shards")
    if shards is not None and int(shards) != SHARDS:
        raise WalLayoutError(f"this WAL table was written with {int(shards)} shards, and this version of the "
                             f"catalog uses {SHARDS}: run the version that wrote it, or rebuild into a new WAL")
    return Schema.from_props(e)


class Wal:
    def __init__(self, store: TableStore, table: str, *, clock: Callable[[], datetime] = _now):
        self.store = store
        self.table = table
        self.clock = clock

    # -- setup and schema lock -------------------------------------------------------------
    def create(self) -> None:
        self.store.create_table(self.table)

    def schema_lock(self, index_table: str) -> Schema | None:
        """The schema locked for one index table fed by this WAL, if any."""
        e = self.store.get(self.table, META, f"{SCHEMA_ROW}-{index_table.lower()}")
        return _schema_of(e) if e is not None else None

    def schema_locks(self) -> dict[str, Schema]:
        """Every index table this WAL feeds, with its locked schema."""
        prefix = f"{SCHEMA_ROW}-"
        try:
            return {e["RowKey"][len(prefix):]: _schema_of(e)
                    for e in self.store.query(self.table, META, rk_ge=prefix, rk_lt=f"{SCHEMA_ROW}.")}
        except TableNotFoundError:
            return {}

    def lock_schema(self, schema: Schema, index_table: str) -> Schema:
        """Persist the index table's schema on first use; refuse a different one later.

        The lock is per index table: `catalog reindex` can build another table under a new schema
        from the same WAL, and a deployment then switches to it (service.ensure checks that)."""
        wanted = {"PartitionKey": META, "RowKey": f"{SCHEMA_ROW}-{index_table.lower()}", **schema.to_props(),
                  "shards": SHARDS, "version": SCHEMA_VERSION, "locked": self.clock().isoformat()}
        try:
            self.store.insert(self.table, wanted)
            return schema
        except ConflictError:
            pass
        persisted = self.schema_lock(index_table)
        if persisted != schema:
            raise SchemaMismatchError(schema, persisted)
        return schema

    # -- append ----------------------------------------------------------------------------
    def new_operation_id(self, shard: int | None = None) -> tuple[str, int]:
        shard = secrets.randbelow(SHARDS) if shard is None else shard
        return f"{ts(self.clock())}-{shard:02d}{secrets.token_hex(5)}", shard

    @staticmethod
    def status_row(op_id: str, count: int) -> str:
        """The RowKey of the entity carrying an operation's status: an operation of exactly one entry
        is one entity (entry and header together, one plain insert); others have a header row."""
        return f"{op_id}-00000" if count == 1 else op_id

    def single_entity(self, op_id: str, entry: PendingEntry) -> dict:
        """A one-entry operation: the entry plus its status. Count (1), action (the entry's kind) and
        acceptance time (in the op id) are implied, so they are not stored."""
        return {**self.entry_entities(op_id, [entry])[0], "status": PENDING}

    def entry_entities(self, op_id: str, entries: Sequence[PendingEntry]) -> list[dict]:
        shard = parse_operation_id(op_id)
        return [{"PartitionKey": shard_partition(shard), "RowKey": f"{op_id}-{seq:05d}", "kind": e.kind,
                 **codec.chunk_properties(e.data)} for seq, e in enumerate(entries)]

    def header_entity(self, op_id: str, count: int, action: str, **extra: Any) -> dict:
        shard = parse_operation_id(op_id)
        return {"PartitionKey": shard_partition(shard), "RowKey": op_id, "kind": HEADER, "status": PENDING,
                "count": count, "action": action, **extra}

    def append(self, entities: Sequence[dict], *, finish: tuple[dict, str] | None = None) -> float:
        """Write entities of one shard, in order, as entity-group transactions; the last batch is
        written last, so a header placed at the end is present only if every entry before it is.
        `finish`: an entity of the same partition to replace, through its ETag, in the same
        transaction as the last batch (an idempotency claim): the operation is accepted exactly
        when that replace succeeds. Returns the seconds the append took."""
        started = time.monotonic()
        batches = list(transactions([*entities, finish[0]] if finish else entities))
        for i, batch in enumerate(batches):
            self._check_deadline(entities[0]["RowKey"])
            if finish is not None and i == len(batches) - 1:
                self.store.write_batch(self.table, batch[:-1], [(batch[-1], finish[1])], timeout=SERVER_TIMEOUT)
            else:
                self._write(batch)
        return time.monotonic() - started

    def _check_deadline(self, stamp: str) -> None:
        """Start a write only if it lands within WRITE_DEADLINE of its stamp's time even at its
        slowest (WRITE_BOUND): what the settle window, so the sweep and the change feed, rely on."""
        age = self.clock() - time_of(stamp)
        if age > WRITE_DEADLINE - WRITE_BOUND:
            raise TransientStorageError(f"WAL append of {stamp[:36]} stopped: {age.total_seconds():.1f}s after its "
                                        f"stamp, a write could land after the {WRITE_DEADLINE.total_seconds():.0f}s "
                                        "deadline; nothing more is written, send the request again")

    def _write(self, batch: Sequence[Mapping[str, Any]]) -> None:
        if len(batch) == 1:
            self.store.insert(self.table, batch[0], timeout=SERVER_TIMEOUT)
        else:
            self.store.insert_batch(self.table, batch, timeout=SERVER_TIMEOUT)

    # -- read ------------------------------------------------------------------------------
    def read_operation(self, op_id: str) -> tuple[Entity | None, list[WalEntry]]:
        shard = parse_operation_id(op_id)
        header, entries = None, []
        # "<op id>" then "<op id>-00000"...: "." sorts right after "-", so this is exactly the op.
        for e in self.store.query(self.table, shard_partition(shard), rk_ge=op_id, rk_lt=op_id + "."):
            if is_status_entity(e):
                header = e
            if e.get("kind") != HEADER:
                entries.append(self.entry(shard, e))
        return header, entries

    def header(self, op_id: str) -> Entity:
        """The entity carrying the operation's status (its header, or its single entry)."""
        shard = parse_operation_id(op_id)
        for e in self.store.query(self.table, shard_partition(shard), rk_ge=op_id, rk_lt=f"{op_id}-00001"):
            if is_status_entity(e):
                return e
        raise NotFoundError(f"no operation {op_id}")

    def scan(self, shard: int, *, after: str = "", before: str | None = None) -> Iterator[Entity | WalEntry]:
        """Headers (raw entities) and entries of one shard with after < RowKey < before, in order
        (never past STAMP_END: the shard's other rows, such as idempotency claims, sort after it)."""
        before = STAMP_END if before is None else min(before, STAMP_END)
        for e in self.store.query(self.table, shard_partition(shard), rk_gt=after, rk_lt=before, page_size=1000):
            yield e if e.get("kind") == HEADER else self.entry(shard, e)

    def items(self, *, after: str = "", before: str | None = None) -> Iterator[Entity | WalEntry]:
        """Headers and entries of every shard with after < stamp < before, merged into stamp order.

        Stamps are unique across shards (the op id names its shard), so the merge is a total order:
        the order the index converges to. An operation's header sorts right before its own entries."""
        def keyed(shard: int):
            for item in self.scan(shard, after=after, before=before):
                yield (item.stamp if isinstance(item, WalEntry) else item["RowKey"]), shard, item

        for _, _, item in heapq.merge(*(keyed(s) for s in range(SHARDS))):
            yield item

    def count_entries(self, *, after: str = "", before: str | None = None) -> int:
        """Entries (not headers) in a stamp range: the total a progress bar needs."""
        return sum(1 for item in self.items(after=after, before=before) if isinstance(item, WalEntry))

    def read_entry(self, stamp: str) -> WalEntry | None:
        """The entry with this stamp, read again (None if there is none)."""
        op_id = stamp.rsplit("-", 1)[0]
        try:
            shard = parse_operation_id(op_id)
        except ValidationError:
            return None
        e = self.store.get(self.table, shard_partition(shard), stamp)
        if e is None or e.get("kind") not in (PUT, DELETE):
            return None
        return WalEntry(shard, stamp, op_id, e["kind"], e)

    def pending(self, shard: int, *, after: str = "", limit: int | None = None) -> list[Entity]:
        """Status entities (RowKey and status only) of a shard's operations still pending after a
        stamp, in order, at most `limit` of them (one page: the cost does not grow with a backlog)."""
        found: list[Entity] = []
        for e in self.store.query(self.table, shard_partition(shard), rk_gt=after, rk_lt=STAMP_END,
                                  equals={"status": PENDING},
                                  page_size=min(limit, 1000) if limit else None, select=("status",)):
            found.append(e)
            if limit is not None and len(found) >= limit:
                break
        return found

    @staticmethod
    def entry(shard: int, e: Mapping[str, Any]) -> WalEntry:
        """The WalEntry of an entry entity of `shard` (its RowKey is `<op id>-<seq>`)."""
        rk = e["RowKey"]
        return WalEntry(shard, rk, rk.rsplit("-", 1)[0], e.get("kind", ""), e)

    # -- operation status ------------------------------------------------------------------
    def mark_entity(self, op_id: str, row: str, status: str, **fields: Any) -> dict:
        return {"PartitionKey": shard_partition(parse_operation_id(op_id)), "RowKey": row, "status": status,
                **fields}

    def mark(self, op_id: str, status: str, *, row: str | None = None, **fields: Any) -> None:
        """Set an operation's status on its status entity (`row`, default the header row)."""
        self.store.merge(self.table, self.mark_entity(op_id, row or op_id, status, **fields))

    def write_marks(self, marks: Sequence[dict]) -> None:
        """Status marks (mark_entity) as one entity-group transaction per shard; a shard's lone mark
        as a plain merge (the SDK's transaction costs the client about four times the CPU)."""
        by_shard: dict[str, list[dict]] = {}
        for mark in marks:
            by_shard.setdefault(mark["PartitionKey"], []).append(mark)
        for batch in by_shard.values():
            if len(batch) == 1:
                self.store.merge(self.table, batch[0])
            else:
                self.store.merge_batch(self.table, batch)

    def record_failure(self, op_id: str, stamp: str, reason: str) -> None:
        self.store.merge(self.table, {"PartitionKey": FAILED, "RowKey": op_id, "stamp": stamp,
                                      "reason": reason[:4000], "at": self.clock().isoformat()})

    def failures(self, limit: int | None = None) -> list[Entity]:
        out = []
        for e in self.store.query(self.table, FAILED):
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def progress(self, name: str, shard: int) -> tuple[str, str | None]:
        """(stamp, ETag) of a shard's progress row `name` (its checkpoint, its tombstone collection)."""
        e = self.store.get(self.table, META, f"{name}-{shard_partition(shard)}")
        return (e["stamp"], e.etag) if e else ("", None)

    def checkpoint(self, shard: int) -> str:
        return self.progress("checkpoint", shard)[0]

    def advance(self, name: str, shard: int, stamp: str) -> str:
        """Move a shard's progress row forward to `stamp`, never back (ETag-guarded). Returns the mark now stored."""
        row = f"{name}-{shard_partition(shard)}"
        for _ in range(20):
            current, etag = self.progress(name, shard)
            if stamp <= current:
                return current
            entity = {"PartitionKey": META, "RowKey": row, "stamp": stamp}
            try:
                if etag is None:
                    self.store.insert(self.table, entity)
                else:
                    self.store.replace(self.table, entity, etag)
                return stamp
            except ConflictError:
                continue  # someone else moved it: read again and compare
        raise ConflictError(f"could not advance {row}: too much contention")
