"""Write batching off the request path: group commit of concurrent one-record writes, and the buffer
that writes applied operations' status marks in the background.

Both are owned by one CatalogService: its GroupCommit and its MarkBuffer, whose writer thread and
writer pool live and end with it (the buffer is flushed when the service is collected and at
interpreter exit, see CatalogService.__init__). No module-level state.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from .errors import CatalogError, TransientStorageError
from .store import MAX_BATCH
from .wal import Wal

log = logging.getLogger(__name__)

MARK_DELAY = timedelta(seconds=2)  # the longest a status mark waits in the buffer
MARK_IDLE = 0.05  # seconds without a new mark after which the buffer is written
WRITER_LINGER = 30.0  # seconds an idle mark writer thread waits before it ends
MARK_WRITERS = 4  # shard transactions of one flush written at once
GROUP_MAX = 50  # one-record writes per group commit: one transaction, one queue message


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
    applied (their index entity and their history row there, two reads) and marks them.

    A mark may carry its operation's history rows (the library applies a record without them, so
    an insert costs no request more): they are written before the marks of their batch, so an
    operation is never marked applied without its history; if the process dies first, the
    sweep finds the history row missing and applies the operation again."""

    def __init__(self, wal: Wal, *, delay: float = MARK_DELAY.total_seconds(), idle: float = MARK_IDLE,
                 write_versions: Callable[[list[dict]], None] | None = None):
        self.wal = wal
        self._write_versions = write_versions
        self._versions: dict[tuple[str, str], list[dict]] = {}  # (shard, status row) -> its history rows
        self._delay, self._idle = delay, idle
        self._cond = threading.Condition()
        # shard partition -> {status row -> mark}: one mark per WAL row, the latest. A duplicated
        # queue delivery marks the same operation again, and a transaction naming one entity
        # twice is refused whole.
        self._pending: dict[str, dict[str, dict]] = {}
        self.unwritten = 0  # marks this instance gave up on (the sweep marks those); shown on /health
        self._oldest = self._latest = 0.0
        self._in_flight = 0  # batches taken from the buffer and not yet written
        self._writer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def add(self, mark: dict, versions: list[dict] | None = None) -> None:
        with self._cond:
            if versions:
                self._versions.setdefault((mark["PartitionKey"], mark["RowKey"]), []).extend(versions)
            now = time.monotonic()
            was_empty = not self._pending
            if was_empty:
                self._oldest = now
            self._latest = now
            batch = self._pending.setdefault(mark["PartitionKey"], {})
            batch[mark["RowKey"]] = mark
            full = [list(self._pending.pop(mark["PartitionKey"]).values())] if len(batch) >= MAX_BATCH else []
            self._in_flight += len(full)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="catalog-status-marks", daemon=True)
                self._writer.start()
            elif was_empty:
                self._cond.notify()  # otherwise the writer is in a timed wait already: no wake-up per mark
        self._written(full)

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
            self._written(batches)

    def _written(self, batches: list[list[dict]]) -> None:
        """Write batches taken from the buffer (counted in flight since), then say they are done."""
        try:
            self._write(batches)
        finally:
            with self._cond:
                self._in_flight -= len(batches)
                self._cond.notify_all()

    def flush(self, *, batched: bool = True, timeout: float = 30.0) -> None:
        """Write what is buffered, and wait for what the writer thread is writing: afterwards every
        mark added before (and its history rows) is in storage, or given up on."""
        with self._cond:
            batches = self._take()
        if batched:
            self._written(batches)
            with self._cond:
                self._cond.wait_for(lambda: self._in_flight == 0, timeout)
            return
        with self._cond:
            self._in_flight -= len(batches)  # written here one by one, below
        marks = [m for batch in batches for m in batch]
        for written, mark in enumerate(marks):  # one by one: the SDK's batch needs a thread pool, gone at exit
            try:
                self._history_of([mark])
                self.wal.write_marks([mark])
            except CatalogError as e:  # storage is gone: do not retry each of the others at exit
                self._gave_up(marks[written:], e)
                return

    def discard(self) -> int:
        """Forget what is buffered, as a process that dies does (the sweep marks those operations,
        writing their history first). Returns how many marks were dropped."""
        with self._cond:
            dropped = sum(len(batch) for batch in self._pending.values())
            self._pending.clear()
            self._versions.clear()
            return dropped

    def _take(self) -> list[list[dict]]:
        """Every pending batch, out of the buffer and counted in flight (call with the lock held)."""
        batches = [list(batch.values()) for batch in self._pending.values()]
        self._pending.clear()
        self._in_flight += len(batches)
        return batches

    def _write(self, batches: list[list[dict]]) -> None:
        if len(batches) > 1:
            # One transaction per shard, up to MARK_WRITERS at once: a flush covers every shard,
            # and one by one they would trail the last apply by a few hundred milliseconds.
            try:
                list(self._writers().map(self._write_one, batches))
                return
            except RuntimeError:  # the interpreter is shutting down: no new threads; one by one
                pass
        for batch in batches:
            self._write_one(batch)

    def _writers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MARK_WRITERS, thread_name_prefix="catalog-status-marks")
            return self._pool

    def close(self) -> None:
        """Write what is buffered, one by one, and end the writer pool (at exit, or when the service
        that owns the buffer is collected)."""
        self.flush(batched=False)
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _write_one(self, batch: list[dict]) -> None:
        """One shard's marks. A batch storage refuses is written again in halves, down to single
        merges, so one mark it will not take costs only that mark; when storage is busy or gone
        the rest waits for the sweep rather than for retries of every piece."""
        try:
            self._history_of(batch)
        except Exception as e:  # noqa: BLE001 - never a mark without its history: the sweep applies them again
            self._gave_up(batch, e)
            return
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

    def _history_of(self, marks: list[dict]) -> None:
        """Write the history rows the marks carry (once: a mark written again in halves has them)."""
        with self._cond:
            rows = [row for m in marks for row in self._versions.pop((m["PartitionKey"], m["RowKey"]), [])]
        if rows and self._write_versions is not None:
            self._write_versions(rows)

    def _gave_up(self, marks: list[dict], error: Exception) -> None:
        with self._cond:
            self.unwritten += len(marks)
        log.warning("could not write the status marks of operations %s (%s); the sweep will",
                    ", ".join(m["RowKey"].rsplit("-", 1)[0] if m["RowKey"].endswith("-00000") else m["RowKey"]
                              for m in marks[:20]) + (" ..." if len(marks) > 20 else ""), error)
