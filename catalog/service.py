"""The use cases the Functions app, the library client and the CLI call. No storage SDK here."""
from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from . import codec
from .errors import (CatalogError, EntryError, IndexNotBuiltError, RecordTooLargeError, SchemaMismatchError,
                     TransientStorageError, ValidationError)
from .index import Index, Page, STAMP, TOMBSTONE
from .keys import record_keys
from .materializer import ApplyResult, Materializer
from .settings import Schema
from .store import MessageQueue
from .wal import (APPLIED, DELETE, HEADER, MAX_BATCH, PENDING, PUT, SHARDS, WRITE_DEADLINE, PendingEntry, Wal, WalEntry,
                  parse_operation_id, parse_time, shard_partition, time_of)

log = logging.getLogger(__name__)

MAX_BULK_RECORDS = 1000
MAX_DELETE_MATCHES = 10_000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
BULK_KEY = "records"
MARK_DELAY = timedelta(seconds=2)  # the longest a status mark waits in the buffer
MARK_IDLE = 0.05  # seconds without a new mark after which the buffer is written
WRITER_LINGER = 30.0  # seconds an idle mark writer thread waits before it ends
MARK_WRITERS = 4  # shard transactions of one flush written at once
GROUP_MAX = 50  # one-record writes per group commit: one transaction, one queue message
MAX_EMBEDDED_MESSAGE = 40 * 1024  # queue messages hold 64 KiB of base64, 48 KiB of text


@dataclass(frozen=True)
class Accepted:
    operation: str | None  # None: a delete that matched nothing, so nothing was written
    status: str
    count: int  # records written, or identities matched by a delete

    @property
    def location(self) -> str | None:
        return f"/api/operations/{self.operation}" if self.operation else None


def records_from_body(body: Any) -> tuple[list[Any], bool]:
    """One record (object), many (array), or `{"records": [...]}` (an object whose only key is
    `records` holding an array). Returns (records, is_bulk)."""
    if isinstance(body, list):
        return body, True
    if isinstance(body, dict):
        if set(body) == {BULK_KEY} and isinstance(body[BULK_KEY], list):
            return body[BULK_KEY], True
        return [body], False
    raise ValidationError(f"body must be a JSON object or an array of objects, not {type(body).__name__}")


_live_buffers: "weakref.WeakSet[MarkBuffer]" = weakref.WeakSet()


@atexit.register
def _flush_marks_at_exit() -> None:
    for buffer in list(_live_buffers):
        buffer.flush(batched=False)


class _Slot:
    __slots__ = ("item", "event", "group", "result", "error")

    def __init__(self, item):
        self.item, self.event, self.group, self.result, self.error = item, threading.Event(), None, None, None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Concurrent one-record writes share one WAL transaction and one queue message.

    No timer: while one group is being written, the requests that arrive wait and form the next
    group, whose first request then writes it. A lone request goes out at once; a busy instance
    writes fewer, larger batches, and the queue trigger applies a group with one message."""

    def __init__(self, write: Callable[[list], list], max_items: int = GROUP_MAX):
        self._write = write
        self._max = max_items
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._busy = False

    def submit(self, item):
        slot = _Slot(item)
        with self._lock:
            if self._busy:
                self._waiting.append(slot)
                group = None
            else:
                self._busy = True
                group = [slot]
        if group is None:
            slot.event.wait()
            if slot.group is None:  # written by another request's group
                return slot.outcome()
            group = slot.group  # promoted: this request writes the next group
        self._run(group)
        return slot.outcome()

    def _run(self, group: list[_Slot]) -> None:
        try:
            for s, result in zip(group, self._write([s.item for s in group]), strict=True):
                s.result = result
        except BaseException as e:  # every request of the group gets the failure
            for s in group:
                s.error = e
        with self._lock:
            following = self._waiting[:self._max]
            del self._waiting[:self._max]
            if not following:
                self._busy = False
        for s in group[1:]:
            s.event.set()
        if following:
            following[0].group = following
            following[0].event.set()


class MarkBuffer:
    """Status marks of applied one-entry operations, written in the background: one entity-group
    transaction per shard and up to 100 marks. A full shard batch is written at once by the thread
    that filled it; the rest by a writer thread once no mark came for MARK_IDLE, or the oldest has
    waited MARK_DELAY, so a busy instance writes few, large batches and a quiet one promptly.

    Losing buffered marks (the process dies) loses nothing: GET /operations/{id} derives the
    status of a pending one-entry operation from the index, and the sweep finds such operations
    applied with one read and marks them."""

    def __init__(self, wal: Wal, *, delay: float = MARK_DELAY.total_seconds(), idle: float = MARK_IDLE):
        self.wal = wal
        self._delay, self._idle = delay, idle
        self._cond = threading.Condition()
        # shard partition -> {status row -> mark}: one mark per WAL row, the latest. A duplicated
        # queue delivery marks the same operation again, and a transaction naming one entity
        # twice is refused whole.
        self._pending: dict[str, dict[str, dict]] = {}
        self.unwritten = 0  # marks this instance gave up on (the sweep marks those); shown on /health
        self._oldest = self._latest = 0.0
        self._writer: threading.Thread | None = None
        _live_buffers.add(self)

    def add(self, mark: dict) -> None:
        with self._cond:
            now = time.monotonic()
            was_empty = not self._pending
            if was_empty:
                self._oldest = now
            self._latest = now
            batch = self._pending.setdefault(mark["PartitionKey"], {})
            batch[mark["RowKey"]] = mark
            full = [list(self._pending.pop(mark["PartitionKey"]).values())] if len(batch) >= MAX_BATCH else []
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="catalog-status-marks", daemon=True)
                self._writer.start()
            elif was_empty:
                self._cond.notify()  # otherwise the writer is in a timed wait already: no wake-up per mark
        self._write(full)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(WRITER_LINGER) and not self._pending:
                        self._writer = None  # idle: let the thread (and an unused service) go
                        return
                due = min(self._latest + self._idle, self._oldest + self._delay)
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                batches = self._take()
            self._write(batches)

    def flush(self, *, batched: bool = True) -> None:
        with self._cond:
            batches = self._take()
        if batched:
            self._write(batches)
            return
        marks = [m for batch in batches for m in batch]
        for written, mark in enumerate(marks):  # one by one: the SDK's batch needs a thread pool, gone at exit
            try:
                self.wal.store.merge(self.wal.table, mark)
            except CatalogError as e:  # storage is gone: do not retry each of the others at exit
                self._gave_up(marks[written:], e)
                return

    def _take(self) -> list[list[dict]]:
        batches = [list(batch.values()) for batch in self._pending.values()]
        self._pending.clear()
        return batches

    def _write(self, batches: list[list[dict]]) -> None:
        if len(batches) > 1:
            # One transaction per shard, up to MARK_WRITERS at once: a flush covers every shard,
            # and one by one they would trail the last apply by a few hundred milliseconds.
            try:
                list(_mark_writers().map(self._write_one, batches))
                return
            except RuntimeError:  # the interpreter is shutting down: no new threads; one by one
                pass
        for batch in batches:
            self._write_one(batch)

    def _write_one(self, batch: list[dict]) -> None:
        """One shard's marks. A batch storage refuses is written again in halves, down to single
        merges, so one mark it will not take costs only that mark; when storage is busy or gone
        the rest waits for the sweep rather than for retries of every piece."""
        try:
            self.wal.write_marks(batch)
        except TransientStorageError as e:
            self._gave_up(batch, e)
        except Exception as e:  # noqa: BLE001 - the writer thread must live on
            if len(batch) == 1:
                self._gave_up(batch, e)
                return
            log.warning("storage refused a batch of %d status marks (%s); writing it in halves", len(batch), e)
            half = len(batch) // 2
            self._write_one(batch[:half])
            self._write_one(batch[half:])

    def _gave_up(self, marks: list[dict], error: Exception) -> None:
        with self._cond:
            self.unwritten += len(marks)
        log.warning("could not write the status marks of operations %s (%s); the sweep will",
                    ", ".join(m["RowKey"].rsplit("-", 1)[0] if m["RowKey"].endswith("-00000") else m["RowKey"]
                              for m in marks[:20]) + (" ..." if len(marks) > 20 else ""), error)


_writers: ThreadPoolExecutor | None = None
_writers_lock = threading.Lock()


def _mark_writers() -> ThreadPoolExecutor:
    global _writers
    with _writers_lock:
        if _writers is None:
            _writers = ThreadPoolExecutor(MARK_WRITERS, thread_name_prefix="catalog-status-marks")
        return _writers


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
        self.marks = MarkBuffer(wal)
        self.defer_all_marks = deferred_marks
        self._group = GroupCommit(self._log_group)

    def flush(self) -> None:
        """Write the status marks still buffered (the library calls this on close and at exit)."""
        self.marks.flush()

    def ensure(self) -> "CatalogService":
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
            from .operations import READY, read_index_meta  # the CLI's record of a rebuilt table

            built = read_index_meta(self.wal.store, table)
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

    def submit(self, records: Sequence[Any], *, apply_now: bool = False) -> Accepted:
        """Validate, append to the WAL, then enqueue (or, for the library, apply before returning)."""
        pending = self.validate(records)
        if len(pending) == 1 and not apply_now and self.queue is not None:
            return self._group.submit(pending[0])
        return self._log(pending, action=PUT, apply_now=apply_now)

    def delete(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
               apply_now: bool = False) -> Accepted:
        """Resolve the filter to identities now; log one delete per identity."""
        pending: list[PendingEntry] = []
        for record in self.index.iter_all(filters, row_from=row_from, row_to=row_to):
            if len(pending) == MAX_DELETE_MATCHES:
                raise ValidationError(f"the filter matches more than {MAX_DELETE_MATCHES} records: narrow it "
                                      "(for example with row_from/row_to) and delete in parts")
            # The whole record, not only its key fields: a rebuild under another schema can still
            # tell which record this delete removed.
            pending.append(PendingEntry(DELETE, codec.dumps_stored(record)))
        if not pending:  # nothing to delete: nothing is written, and there is no operation to ask about
            return Accepted(None, APPLIED, 0)
        return self._log(pending, action=DELETE, apply_now=apply_now)

    def _log(self, pending: list[PendingEntry], *, action: str, apply_now: bool) -> Accepted:
        op_id, shard = self.wal.new_operation_id(self.shard)
        accepted = time_of(op_id).isoformat()
        if len(pending) == 1:
            # One entity, one plain insert: the entry carries the operation's status itself.
            entities = [self.wal.single_entity(op_id, pending[0])]
            header = entities[0]
        else:
            entities = self.wal.entry_entities(op_id, pending)
            header = self.wal.header_entity(op_id, len(pending), action, accepted=accepted)
            entities.append(header)  # written last: present only if every entry is
        took = self._append(entities, op_id)
        if took > WRITE_DEADLINE.total_seconds():
            log.error("operation %s: WAL append took %.1fs, over the %ss deadline the sweep relies on; "
                      "the queue message still applies it (or run recover)", op_id, took,
                      WRITE_DEADLINE.total_seconds())
        log.info("operation %s: logged %d %s entries in %.3fs", op_id, len(pending), action, took)
        entries = [self.wal.entry(shard, e) for e in entities if e["kind"] != HEADER]
        if apply_now or not pending:
            deferred = bool(pending) and self.defer_all_marks
            self.materializer.apply_entries(op_id, entries, header, final=True, mark=not deferred)
            if deferred:
                self.marks.add(self.wal.mark_entity(op_id, header["RowKey"], APPLIED,
                                                    finished=self.wal.clock().isoformat()))
            return Accepted(op_id, APPLIED, len(pending))
        self._enqueue([(op_id, entries)])
        return Accepted(op_id, PENDING, len(pending))

    def _append(self, entities: list[dict], op_ids: str) -> float:
        try:
            return self.wal.append(entities)
        except CatalogError as e:  # the caller gets a problem without storage details: the log has them
            log.warning("operations %s: WAL append failed, nothing was accepted: %s", op_ids, e)
            raise

    def _log_group(self, pending: list[PendingEntry]) -> list[Accepted]:
        """Several one-record writes of concurrent requests: one WAL shard, one transaction (each
        entity is still its own operation, with its own status), one queue message."""
        ops, shard = [], self.shard
        for entry in pending:
            op_id, shard = self.wal.new_operation_id(shard)
            ops.append((op_id, self.wal.single_entity(op_id, entry)))
        took = self._append([entity for _, entity in ops], ", ".join(op for op, _ in ops))
        if took > WRITE_DEADLINE.total_seconds():
            log.error("operations %s: WAL append took %.1fs, over the %ss deadline the sweep relies on",
                      ", ".join(op for op, _ in ops), took, WRITE_DEADLINE.total_seconds())
        for op_id, _ in ops:
            log.info("operation %s: logged 1 put entry in %.3fs (group of %d)", op_id, took, len(ops))
        self._enqueue([(op_id, [self.wal.entry(shard, e)]) for op_id, e in ops])
        return [Accepted(op_id, PENDING, 1) for op_id, _ in ops]

    def _enqueue(self, ops: list[tuple[str, list[WalEntry]]]) -> None:
        if self.queue is None:
            return
        # Small operations travel inside the message (a copy of what the WAL holds), so applying
        # them needs no WAL read; larger ones are read from the WAL by id.
        items = [{"op": op_id, "e": [[e.stamp.rsplit("-", 1)[1], e.kind,
                                      codec.join_chunks(e.entity).decode("utf-8", "surrogatepass")] for e in entries]}
                 for op_id, entries in ops]
        text = json.dumps(items[0] if len(items) == 1 else {"ops": items}, ensure_ascii=False)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate (a record stored before they were refused): escaped
            text = json.dumps(items[0] if len(items) == 1 else {"ops": items}, ensure_ascii=True)
            size = len(text)
        if size > MAX_EMBEDDED_MESSAGE:
            refs = [{"op": op_id} for op_id, _ in ops]
            text = json.dumps(refs[0] if len(refs) == 1 else {"ops": refs})
        try:
            self.queue.send(text)
        except Exception as e:  # the WAL has it: the sweep applies it, the request still succeeds
            log.warning("operations %s: enqueue failed (%s); the timer sweep will apply them",
                        ", ".join(op for op, _ in ops), e)

    # -- apply path ----------------------------------------------------------------------------
    @staticmethod
    def parse_message(text: str) -> list[tuple[str, list[list] | None]]:
        """[(operation id, embedded entries or None)] of a message: `{"op", "e"?}` or `{"ops": [...]}`."""
        try:
            message = json.loads(text)
            items = message["ops"] if "ops" in message else [message]
            ops = []
            for item in items:
                op_id = item["op"]
                parse_operation_id(op_id)
                embedded = item.get("e")
                if embedded is not None and not (isinstance(embedded, list) and
                                                 all(isinstance(x, list) and len(x) == 3 for x in embedded)):
                    raise ValueError("bad embedded entries")
                ops.append((op_id, embedded))
            if not ops:
                raise ValueError("no operations")
            return ops
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
            raise EntryError(f"queue message is not a catalog message: {text[:200]!r}") from e

    def _embedded_entries(self, op_id: str, embedded: list[list]) -> list[WalEntry]:
        shard = parse_operation_id(op_id)
        entries = []
        for seq, kind, data in embedded:
            rk = f"{op_id}-{seq}"
            entity = {"PartitionKey": shard_partition(shard), "RowKey": rk, "kind": kind,
                      **codec.chunk_properties(str(data).encode("utf-8", "surrogatepass"))}
            entries.append(WalEntry(shard, rk, op_id, kind, entity))
        return entries

    def apply_message(self, text: str) -> ApplyResult:
        """Queue trigger: raises if an entry cannot be applied, so the message is retried (applying
        what did work again is a no-op)."""
        ops = self.parse_message(text)
        total, failures = ApplyResult(), []
        for op_id, embedded in ops:
            try:
                if embedded is None:
                    total.add(self.materializer.apply_operation(op_id))
                    continue
                entries = self._embedded_entries(op_id, embedded)
                # The write path always logs the operation's status: mark it once applied. A
                # one-entry operation's mark goes through the buffer (its status can be read
                # from the index meanwhile); a larger one's is written now.
                single = len(entries) == 1
                status = {"RowKey": self.wal.status_row(op_id, len(entries)), "status": PENDING}
                total.add(self.materializer.apply_entries(op_id, entries, status, mark=not single))
                if single:
                    self.marks.add(self.wal.mark_entity(op_id, status["RowKey"], APPLIED,
                                                        finished=self.wal.clock().isoformat()))
            except EntryError as e:
                failures.append(str(e))
        if failures:
            raise EntryError("; ".join(failures))
        return total

    def apply_poison(self, text: str, reason: str | None = None) -> ApplyResult | None:
        """Poison trigger: one last try; what still fails is recorded on the operation."""
        try:
            ops = self.parse_message(text)
        except EntryError as e:
            log.error("poison message dropped: %s", e)
            return None
        total = ApplyResult()
        for op_id, _ in ops:
            total.add(self.materializer.apply_operation(op_id, final=True))
        return total

    def sweep(self, now: datetime | None = None) -> ApplyResult:
        return self.materializer.sweep(now)

    def recover(self, since: str | datetime | None = None) -> ApplyResult:
        return self.materializer.replay(parse_time(since) if since is not None else None)

    # -- read path ----------------------------------------------------------------------------
    def query(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              limit: int | None = DEFAULT_LIMIT, continuation: str | None = None) -> Page:
        if limit is not None and not (1 <= limit <= MAX_LIMIT):
            raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}")
        return self.index.query(filters, row_from=row_from, row_to=row_to, limit=limit,
                                continuation=continuation)

    def query_all(self, filters: Mapping[str, Any], *, row_from: str | None = None,
                  row_to: str | None = None) -> list[dict]:
        return list(self.index.iter_all(filters, row_from=row_from, row_to=row_to))

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

    def schema_view(self) -> dict:
        return {"index_keys": list(self.schema.index_keys), "row_key": self.schema.row_key,
                "case_sensitive": self.schema.case_sensitive, "table": self.index.table,
                "wal_table": self.wal.table, "queue": self.queue.name if self.queue else None}

    def health(self, now: datetime | None = None, *, failures: int = 5) -> dict:
        now = now or self.wal.clock()
        shards, pending, oldest = [], 0, None
        for shard in range(SHARDS):
            checkpoint = self.wal.checkpoint(shard)
            lag = (now - time_of(checkpoint)).total_seconds() if checkpoint else None
            shard_pending = 0
            for e in self.wal.store.query(self.wal.table, shard_partition(shard), rk_gt=checkpoint,
                                          equals={"status": PENDING}):
                shard_pending += 1
                if oldest is None or e["RowKey"] < oldest:
                    oldest = e["RowKey"]
            pending += shard_pending
            shards.append({"shard": shard_partition(shard), "checkpoint": checkpoint or None,
                           "lag_seconds": round(lag, 3) if lag is not None else None, "pending": shard_pending})
        failed = self.wal.failures(limit=1000)
        return {
            "status": "ok",
            "pending": pending,
            "oldest_pending_age_seconds": round((now - time_of(oldest)).total_seconds(), 3) if oldest else None,
            "failed_operations": len(failed) if len(failed) < 1000 else "1000+",
            "latest_failures": [{"operation": f["RowKey"], "reason": f.get("reason"), "at": f.get("at")}
                                for f in sorted(failed, key=lambda f: f.get("at", ""), reverse=True)[:failures]],
            "status_marks_unwritten": self.marks.unwritten,
            "shards": shards,
        }
