"""The use cases the Functions app, the library client and the CLI call. No storage SDK here."""
from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import codec, messages
from .batching import GroupCommit, MarkBuffer
from .changes import DEFAULT_FEED_LIMIT, Change, ChangeFeed, FeedPage, history_changes, start_position
from .errors import (
    CatalogError,
    ConflictError,
    EntryError,
    IndexNotBuiltError,
    NotFoundError,
    RecordTooLargeError,
    SchemaMismatchError,
    ValidationError,
)
from .idempotency import Answer, IdempotencyKeys, KeyedRequest
from .index import STAMP, TOMBSTONE, Index
from .index_meta import READY, read_index_meta
from .keys import record_keys
from .materializer import ApplyResult, Materializer, Unit, UnitFailed
from .planner import Page, project
from .settings import Schema
from .store import MessageQueue
from .wal import (
    APPLIED,
    DELETE,
    HEADER,
    PENDING,
    PUT,
    SHARDS,
    WRITE_DEADLINE,
    PendingEntry,
    Wal,
    WalEntry,
    parse_operation_id,
    parse_time,
    shard_partition,
    time_of,
)

log = logging.getLogger(__name__)

MAX_BULK_RECORDS = 1000
MAX_DELETE_MATCHES = 10_000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
HEALTH_PENDING_CAP = 25  # pending operations /health counts per shard before it says "at least"


@dataclass(frozen=True)
class Accepted:
    operation: str | None  # None: a delete that matched nothing, so nothing was written
    status: str
    count: int  # records written, or identities matched by a delete


class CatalogService:
    def __init__(self, schema: Schema, wal: Wal, index: Index, materializer: Materializer,
                 queue: MessageQueue | None, poison_queue: MessageQueue | None = None, *,
                 shard: int | None = None, deferred_marks: bool = False):
        self.schema = schema
        self.wal = wal
        self.index = index
        self.materializer = materializer
        self.queue = queue
        self.poison_queue = poison_queue
        # The queue trigger marks one-entry operations applied through the buffer (in batches, off
        # the apply path). The library defers every mark (deferred_marks) and pins its operations
        # to one WAL shard, so its marks batch up: a lost multi-entry mark means the sweep applies
        # that operation once more, which is a no-op. Other direct applies (the CLI) mark at once.
        self.shard = shard
        self.marks = MarkBuffer(wal, write_versions=index.write_versions)
        self.keys = IdempotencyKeys(wal)
        self.feed = ChangeFeed(wal, materializer.settle_window, each=index.reader.each)
        self.defer_all_marks = deferred_marks
        self._group = GroupCommit(self._append_group)
        # Buffered marks are written when this service is collected or the interpreter exits,
        # whichever comes first (the finalizer holds the buffer, not the service).
        weakref.finalize(self, self.marks.close)
        weakref.finalize(self, materializer.close)
        weakref.finalize(self, index.close)

    def flush(self) -> None:
        """Write the status marks still buffered (the library calls this on close and at exit)."""
        self.marks.flush()

    def ensure(self) -> CatalogService:
        """Create the tables and queues if needed and lock (or check) the schema."""
        self.wal.create()
        self.index.create()
        self._check_index_table()
        for q in (self.queue, self.poison_queue):
            if q is not None:
                q.create()
        return self

    def _check_index_table(self) -> None:
        """Lock this index table's schema, refusing a table the WAL's history never reached.

        A table is fit to serve if it is already locked with this schema, or the WAL is new, or
        `catalog reindex` built it from this WAL under this schema. Switching CATALOG_TABLE to an
        empty table would otherwise silently serve a catalog without its past."""
        table = self.index.table
        if self.wal.schema_lock(table) is None:
            built = read_index_meta(self.index)  # what `catalog reindex` recorded in a table it built
            others = sorted(t for t in self.wal.schema_locks() if t != table.lower())
            if built is not None:
                if built.state != READY or built.wal_table.lower() != self.wal.table.lower():
                    raise IndexNotBuiltError(
                        f"index table {table} is not ready: reindex left it {built.state!r} from WAL table "
                        f"{built.wal_table!r}; finish `python -m catalog reindex --to {table}` first")
                if built.schema != self.schema:
                    raise SchemaMismatchError(self.schema, built.schema)
            elif others:
                raise IndexNotBuiltError(
                    f"index table {table} is new, but WAL table {self.wal.table} already feeds {', '.join(others)}: "
                    f"build it from the WAL first (python -m catalog reindex --to {table} "
                    f"--index-keys ... --row-key ...), then point CATALOG_TABLE at it")
        self.wal.lock_schema(self.schema, table)

    # -- write path --------------------------------------------------------------------------
    def validate(self, records: Sequence[Any]) -> list[PendingEntry]:
        """Everything checked before anything is written; errors name the record's position."""
        if not records:
            raise ValidationError("no records given")
        if len(records) > MAX_BULK_RECORDS:
            raise ValidationError(f"at most {MAX_BULK_RECORDS} records per request, got {len(records)}")
        pending = []
        for i, record in enumerate(records):
            where = i if len(records) > 1 else None
            try:
                pending.append(self._validate_one(record))
            except RecordTooLargeError as e:
                raise RecordTooLargeError(e.detail, field=e.field, index=where) from None
            except ValidationError as e:
                raise ValidationError(e.detail, field=e.field, index=where) from None
        return pending

    def _validate_one(self, record: Any) -> PendingEntry:
        if not isinstance(record, dict):
            raise ValidationError(f"a record must be a JSON object, not {type(record).__name__}")
        keys = record_keys(self.schema, record)
        data = codec.dumps(record)
        chunks = codec.chunk_properties(data)
        stamp_like = "0" * 41
        longest_pk = max(keys.partition_keys, key=len)
        codec.check_entity_size({"PartitionKey": longest_pk, "RowKey": keys.row_key, STAMP: stamp_like,
                                 TOMBSTONE: False, **chunks})
        codec.check_entity_size({"PartitionKey": shard_partition(0), "RowKey": stamp_like, "kind": PUT, **chunks})
        return PendingEntry(PUT, data)

    def submit(self, records: Sequence[Any], *, apply_now: bool = False,
               idempotency: KeyedRequest | None = None) -> Accepted:
        """Validate, append to the WAL, then enqueue (or, for the library, apply before returning).
        With `idempotency`, a repeat of the same request under the same key answers the first
        answer and writes nothing (idempotency.py)."""
        pending = self.validate(records)
        if idempotency is not None:
            return self._append_keyed(idempotency, pending, action=PUT, apply_now=apply_now)
        if len(pending) == 1 and not apply_now and self.queue is not None:
            return self._group.submit(pending[0])
        return self._append_operation(pending, action=PUT, apply_now=apply_now)

    def delete(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
               row_prefix: str | None = None, apply_now: bool = False,
               idempotency: KeyedRequest | None = None) -> Accepted:
        """Resolve the filter to identities now; log one delete per identity."""
        pending = self._deletes(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        if idempotency is not None:
            return self._append_keyed(idempotency, pending, action=DELETE, apply_now=apply_now)
        if not pending:  # nothing to delete: nothing is written, and there is no operation to ask about
            return Accepted(None, APPLIED, 0)
        return self._append_operation(pending, action=DELETE, apply_now=apply_now)

    def _deletes(self, filters: Mapping[str, Any], *, row_from: str | None, row_to: str | None,
                 row_prefix: str | None) -> list[PendingEntry]:
        pending: list[PendingEntry] = []
        for record in self.index.iter_all(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix):
            if len(pending) == MAX_DELETE_MATCHES:
                raise ValidationError(f"the filter matches more than {MAX_DELETE_MATCHES} records: narrow it "
                                      "(for example with row_from/row_to) and delete in parts")
            # The whole record, not only its key fields: a rebuild under another schema can still
            # tell which record this delete removed.
            pending.append(PendingEntry(DELETE, codec.dumps_stored(record)))
        return pending

    def _append_keyed(self, request: KeyedRequest, pending: list[PendingEntry], *, action: str,
                      apply_now: bool) -> Accepted:
        """The first answer under the key, or claim it and write the operation in the key's WAL
        shard, the claim finished in the same transaction as the operation's last batch."""
        def answer() -> Answer:
            if not pending:  # a delete that matched nothing: the claim is all there is to write
                return Answer(None, APPLIED, 0)
            return Answer(self.wal.new_operation_id(request.shard)[0], PENDING, len(pending))

        while True:
            got = self.keys.answer_or_claim(request, answer)
            if isinstance(got, Answer):
                log.info("operation %s: answered again for a repeated Idempotency-Key", got.operation)
                return Accepted(got.operation, got.status, got.count)
            op_id = got.finish["operation"] or None
            if op_id is None:
                return Accepted(None, APPLIED, 0)
            try:
                return self._append_operation(pending, action=action, apply_now=apply_now, op_id=op_id,
                                              finish=(got.finish, got.etag))
            except ConflictError:
                # The claim was taken over while this request wrote (it took longer than the WAL
                # write deadline): its last batch failed whole, so the answer is the other's.
                log.warning("operation %s: not accepted, its Idempotency-Key was taken over", op_id)
            except Exception:
                self.keys.release(got)  # nothing was accepted: a retry may write at once
                raise

    def _append_operation(self, pending: list[PendingEntry], *, action: str, apply_now: bool,
                          op_id: str | None = None, finish: tuple[dict, str] | None = None) -> Accepted:
        if op_id is None:
            op_id, shard = self.wal.new_operation_id(self.shard)
        else:
            shard = parse_operation_id(op_id)
        accepted = time_of(op_id).isoformat()
        if len(pending) == 1:
            # One entity, one plain insert: the entry carries the operation's status itself.
            entities = [self.wal.single_entity(op_id, pending[0])]
            header = entities[0]
        else:
            entities = self.wal.entry_entities(op_id, pending)
            header = self.wal.header_entity(op_id, len(pending), action, accepted=accepted)
            entities.append(header)  # written last: present only if every entry is
        took = self._write_wal(entities, op_id, finish)
        if took > WRITE_DEADLINE.total_seconds():
            log.error("operation %s: WAL append took %.1fs, over the %ss deadline the sweep relies on; "
                      "the queue message still applies it (or run recover)", op_id, took,
                      WRITE_DEADLINE.total_seconds())
        log.info("operation %s: logged %d %s entries in %.3fs", op_id, len(pending), action, took)
        entries = [self.wal.entry(shard, e) for e in entities if e["kind"] != HEADER]
        if apply_now or not pending:
            deferred = bool(pending) and self.defer_all_marks
            # The library's one-record insert leaves its history row to the mark buffer too (written
            # before the mark, in batches): the insert costs one WAL and the index writes only.
            result = self.materializer.apply_entries(op_id, entries, header, final=True, mark=not deferred,
                                                     history=not (deferred and len(pending) == 1))
            if deferred:
                self.marks.add(self.wal.mark_entity(op_id, header["RowKey"], APPLIED,
                                                    finished=self.wal.clock().isoformat()), result.versions)
            return Accepted(op_id, APPLIED, len(pending))
        self._enqueue([(op_id, entries)])
        return Accepted(op_id, PENDING, len(pending))

    def _write_wal(self, entities: list[dict], op_ids: str, finish: tuple[dict, str] | None = None) -> float:
        try:
            return self.wal.append(entities, finish=finish)
        except CatalogError as e:  # the caller gets a problem without storage details: the log has them
            log.warning("operations %s: WAL append failed, nothing was accepted: %s", op_ids, e)
            raise

    def _append_group(self, pending: list[PendingEntry]) -> list[Accepted]:
        """Several one-record writes of concurrent requests: one WAL shard, one transaction (each
        entity is still its own operation, with its own status), one queue message."""
        ops: list[tuple[str, dict]] = []  # (op id, its entity)
        shard = self.shard  # None: the first id picks one, and the others share it
        for entry in pending:
            op_id, shard = self.wal.new_operation_id(shard)
            ops.append((op_id, self.wal.single_entity(op_id, entry)))
        ids = ", ".join(op for op, _ in ops)
        took = self._write_wal([entity for _, entity in ops], ids)
        if took > WRITE_DEADLINE.total_seconds():
            log.error("operations %s: WAL append took %.1fs, over the %ss deadline the sweep relies on",
                      ids, took, WRITE_DEADLINE.total_seconds())
        for op_id, _ in ops:
            log.info("operation %s: logged 1 put entry in %.3fs (group of %d)", op_id, took, len(ops))
        self._enqueue([(op_id, [self.wal.entry(parse_operation_id(op_id), e)]) for op_id, e in ops])
        return [Accepted(op_id, PENDING, 1) for op_id, _ in ops]

    def _enqueue(self, ops: list[tuple[str, list[WalEntry]]]) -> None:
        if self.queue is None:
            return
        try:
            self.queue.send(messages.encode(ops))
        except Exception as e:  # the WAL has it: the sweep applies it, the request still succeeds
            log.warning("operations %s: enqueue failed (%s); the timer sweep will apply them",
                        ", ".join(op for op, _ in ops), e)

    # -- apply path ----------------------------------------------------------------------------
    def apply_message(self, text: str) -> ApplyResult:
        """Queue trigger: every operation the message names, as one batched unit. Raises if an entry
        cannot be applied, so the message is retried (applying what did work again is a no-op)."""
        units, singles = [], []
        for op_id, embedded in messages.parse(text):
            if embedded is None:  # too large to embed: read from the WAL
                header, entries = self.wal.read_operation(op_id)
                units.append(Unit(op_id, header, entries))
                continue
            entries = messages.embedded_entries(op_id, embedded)
            # The write path always logs the operation's status: mark it once applied. A
            # one-entry operation's mark goes through the buffer (its status can be read from
            # the index meanwhile); a larger one's is written now.
            row = self.wal.status_row(op_id, len(entries))
            units.append(Unit(op_id, {"RowKey": row, "status": PENDING}, entries, mark=len(entries) > 1))
            if len(entries) == 1:
                singles.append((op_id, row))
        failed: set[str] = set()
        reason = ""
        try:
            total = self.materializer.apply_unit(units, final=False)
        except UnitFailed as e:
            failed, total, reason = e.operations, e.result, str(e)
        for op_id, row in singles:
            if op_id not in failed:
                self.marks.add(self.wal.mark_entity(op_id, row, APPLIED, finished=self.wal.clock().isoformat()))
        if failed:
            raise EntryError(reason)  # names each operation and entry
        return total

    def apply_poison(self, text: str) -> ApplyResult | None:
        """Poison trigger: one last try; what still fails is recorded on the operation."""
        try:
            ops = messages.parse(text)
        except EntryError as e:
            log.error("poison message dropped: %s", e)
            return None
        total = ApplyResult()
        for op_id, _ in ops:
            total.add(self.materializer.apply_operation(op_id, final=True))
        return total

    def sweep(self, now: datetime | None = None) -> ApplyResult:
        """The timer's work: apply what the queue path missed, collect tombstones and expired
        idempotency keys."""
        result = self.materializer.sweep(now)
        try:
            result.keys_collected = self.keys.collect(now)
        except CatalogError as e:  # the next sweep tries again
            log.warning("expired idempotency keys not collected: %s", e)
        return result

    def recover(self, since: str | datetime | None = None) -> ApplyResult:
        return self.materializer.replay(parse_time(since) if since is not None else None)

    # -- read path ----------------------------------------------------------------------------
    def query(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None, fields: Sequence[str] | None = None,
              limit: int | None = DEFAULT_LIMIT, continuation: str | None = None) -> Page:
        if limit is not None and not (1 <= limit <= MAX_LIMIT):
            raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
        return self.index.query(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix, fields=fields,
                                limit=limit, continuation=continuation)

    def query_all(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
                  row_prefix: str | None = None, fields: Sequence[str] | None = None) -> list[dict]:
        records = self.index.iter_all(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        return [project(r, fields) for r in records]

    def count(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None) -> int:
        return self.index.count(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)

    def wait_for_operation(self, op_id: str, wait: float, *, poll: float = 0.05, longest: float = 1.0) -> dict:
        """`operation(op_id)` once it is no longer pending, or after `wait` seconds as it is then. Polls
        the WAL (the instance that applies it may be another one), every 50 ms at first, then less
        often, at most once a second."""
        deadline = time.monotonic() + wait
        while True:
            view = self.operation(op_id)
            left = deadline - time.monotonic()
            if view["status"] != PENDING or left <= 0:
                return view
            time.sleep(min(poll, left))
            poll = min(poll * 2, longest)

    @staticmethod
    def check_operation_id(op_id: str) -> None:
        """NotFoundError (404) for what is not even the shape of an operation id."""
        try:
            parse_operation_id(op_id)
        except ValidationError:
            raise NotFoundError(f"no operation {codec.printable(str(op_id))}") from None

    def operation(self, op_id: str) -> dict:
        header = self.wal.header(op_id)
        single = header.get("kind") != HEADER  # a one-entry operation: count, action and time implied
        action = header.get("kind") if single else header.get("action")
        status, finished = header.get("status", PENDING), header.get("finished")
        if status == PENDING and single and header.get("kind") in (PUT, DELETE):
            # Applied, and its mark still buffered (or lost): the index says so (one read).
            entry = self.wal.entry(parse_operation_id(op_id), header)
            shown = self.materializer.reflected(entry)
            if shown is not None:
                status = APPLIED
                if shown.get(STAMP) == entry.stamp and shown.timestamp is not None:
                    finished = shown.timestamp.isoformat()  # written by this operation, at that time
        view = {"operation": op_id, "status": status,
                "action": "delete" if action == DELETE else "insert",
                "matched" if action == DELETE else "records": 1 if single else int(header.get("count", 0)),
                "accepted": header.get("accepted") or time_of(op_id).isoformat()}
        if finished:
            view["finished"] = finished
        for name in ("error", "last_error"):
            if header.get(name):
                view[name] = header[name]
        if header.get("failed"):
            view["failed"] = int(header["failed"])
        return view

    # -- change feed and history ----------------------------------------------------------------
    def changes(self, *, after: str | None = None, since: str | datetime | None = None,
                limit: int = DEFAULT_FEED_LIMIT, wait: float = 0) -> FeedPage:
        """A page of the change feed (changes.py): every accepted put and delete once, in order, up to
        the frontier; with `wait`, an empty page waits up to that many seconds for a change to become final."""
        start = start_position(after, since)
        return self.feed.wait_page(start, limit, wait) if wait else self.feed.page(start, limit)

    def history(self, identity: Mapping[str, Any], *, as_of: str | datetime | None = None) -> list[Change]:
        """Every version of one record (its index and row key values identify it), oldest first; with
        `as_of`, the one in effect then. ValidationError (400) names a missing identity field."""
        keys = record_keys(self.schema, identity)  # a missing index or row key is a 400 naming it
        try:
            moment = parse_time(as_of) if as_of is not None else None
        except ValidationError as e:
            raise ValidationError(e.detail, field="as_of") from None
        return history_changes(self.index.history(keys), moment)

    def schema_view(self) -> dict:
        return {"index_keys": list(self.schema.index_keys), "row_key": self.schema.row_key,
                "case_sensitive": self.schema.case_sensitive, "table": self.index.table,
                "wal_table": self.wal.table, "queue": self.queue.name if self.queue else None}

    def health(self, now: datetime | None = None, *, failures: int = 5) -> dict:
        """Liveness, per-shard checkpoint and lag, pending operations and failures, in O(shards):
        each shard's pending operations are counted up to HEALTH_PENDING_CAP (then the count is
        a lower bound, `pending_at_least`), and the oldest is the first after the checkpoint."""
        now = now or self.wal.clock()
        shards, pending, oldest, capped = [], 0, None, False

        def read(shard: int) -> tuple[str, list[str]]:  # a shard's checkpoint and its first pending rows
            checkpoint = self.wal.checkpoint(shard)
            return checkpoint, [e["RowKey"] for e in self.wal.pending(shard, after=checkpoint,
                                                                       limit=HEALTH_PENDING_CAP)]
        # The shards are read together: 32 requests one after the other would be the answer's latency.
        for shard, (checkpoint, rows) in enumerate(self.index.reader.each(read, range(SHARDS))):
            lag = (now - time_of(checkpoint)).total_seconds() if checkpoint else None
            if rows and (oldest is None or rows[0] < oldest):
                oldest = rows[0]
            capped = capped or len(rows) >= HEALTH_PENDING_CAP
            pending += len(rows)
            shards.append({"shard": shard_partition(shard), "checkpoint": checkpoint or None,
                           "lag_seconds": round(lag, 3) if lag is not None else None, "pending": len(rows),
                           "pending_at_least": len(rows) >= HEALTH_PENDING_CAP})
        failed = self.wal.failures(limit=1000)
        return {
            "status": "ok",
            "pending": pending,
            "pending_at_least": capped,
            "oldest_pending_age_seconds": round((now - time_of(oldest)).total_seconds(), 3) if oldest else None,
            "failed_operations": len(failed) if len(failed) < 1000 else "1000+",
            "latest_failures": [{"operation": f["RowKey"], "reason": f.get("reason"), "at": f.get("at")}
                                for f in sorted(failed, key=lambda f: f.get("at", ""), reverse=True)[:failures]],
            "status_marks_unwritten": self.marks.unwritten,
            "shards": shards,
        }

