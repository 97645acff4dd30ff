"""Applying the WAL to the index: per operation (queue trigger, library), by sweep (timer), and GC.

Plain objects: the queue and timer triggers only call `apply_operation` and `sweep`.

- `apply_operation(op_id, final=False)` applies the entries of one operation; an entry that cannot
  be applied makes it raise (the queue retries the message, then moves it to the poison queue);
  with `final=True` (poison trigger) the failure is recorded on the operation instead.
- `sweep()` applies, per shard, every entry after the checkpoint and older than the settle
  window, records entries that cannot be applied as failed and goes on, then advances the
  checkpoint (ETag-guarded, never back). A transient storage error stops that shard at the last
  finished operation; the next sweep resumes there.
- Tombstones are collected once their delete is older than TOMBSTONE_RETENTION and behind the
  checkpoint: longer than a queue message can live, so no late delivery can resurrect a record.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import codec
from .errors import CatalogError, EntryError, TransientStorageError, ValidationError
from .index import Index, IndexWrite, history_entity
from .keys import record_keys
from .settings import DEFAULT_APPLY_CONCURRENCY, Schema
from .store import MAX_BATCH, Entity
from .wal import (
    APPLIED,
    DELETE,
    FAILED_STATUS,
    PENDING,
    PUT,
    SETTLE_WINDOW,
    SHARDS,
    Wal,
    WalEntry,
    is_status_entity,
    shard_partition,
    ts,
)

log = logging.getLogger(__name__)

TOMBSTONE_RETENTION = timedelta(days=14)  # queue messages live 7 days at most
SHARD_CONCURRENCY = 4  # WAL shards a sweep or recover applies at once
WINDOW_ENTRIES = 1000  # WAL entries a sweep applies as one batched unit


@dataclass
class ApplyResult:
    operations: int = 0
    entries: int = 0
    failed: int = 0
    changed: int = 0
    stopped_shards: list[int] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    tombstones_collected: int = 0
    keys_collected: int = 0
    versions: list[dict] = field(default_factory=list)  # history rows left to the caller (apply_unit)

    def view(self) -> dict:
        """The one rendering of a result, for the recover route and `catalog recover --json` alike."""
        return {"operations": self.operations, "entries": self.entries, "failed": self.failed,
                "changed": self.changed, "stopped_shards": sorted(self.stopped_shards),
                "checkpoints": {shard_partition(s): c for s, c in sorted(self.checkpoints.items())}}

    def add(self, other: ApplyResult) -> None:
        self.operations += other.operations
        self.entries += other.entries
        self.failed += other.failed
        self.changed += other.changed
        self.stopped_shards += other.stopped_shards
        self.checkpoints.update(other.checkpoints)
        self.tombstones_collected += other.tombstones_collected
        self.keys_collected += other.keys_collected


class Materializer:
    def __init__(self, wal: Wal, index: Index, schema: Schema, *,
                 clock: Callable[[], datetime] | None = None,
                 settle_window: timedelta = SETTLE_WINDOW,
                 tombstone_retention: timedelta = TOMBSTONE_RETENTION,
                 concurrency: int = DEFAULT_APPLY_CONCURRENCY):
        self.wal = wal
        self.index = index
        self.schema = schema
        self.clock = clock or wal.clock
        self.settle_window = settle_window
        self.tombstone_retention = tombstone_retention
        self.concurrency = max(1, concurrency)  # index writes in flight, shared by every apply unit
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- one entry ---------------------------------------------------------------------------
    def writers(self) -> ThreadPoolExecutor | None:
        """The threads index writes go out on: `concurrency` of them for every unit this materializer
        applies (queue messages, sweep shards), so writes in flight never exceed the setting (nor
        the storage client's connection pool). Made on first use; ended with close()."""
        if self.concurrency <= 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="catalog-apply")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def apply_entry(self, entry: WalEntry) -> int:
        """Apply one WAL entry. EntryError if it cannot ever be applied; storage errors propagate."""
        return self.index.write_many([self.write_of(entry)])

    def write_of(self, entry: WalEntry) -> IndexWrite:
        """What an entry writes to the index: its keys, its stamp, the record (None for a delete),
        and its version for the identity's history (a delete's is the record it removed)."""
        payload = entry.record()
        try:
            keys = record_keys(self.schema, payload)
        except ValidationError as e:
            raise EntryError(f"entry {entry.stamp}: {e}") from e
        record = codec.join_chunks(entry.entity)
        return IndexWrite(keys, entry.stamp, record if entry.kind == PUT else None, (entry.kind, record))

    def reflected(self, entry: WalEntry, *, with_history: bool = False) -> Entity | None:
        """The index entity showing this entry (or a later operation on its identity), if the index
        shows it. One read; `with_history`: and its version is in the history (a second read), which
        is what "applied" means to the sweep. None for an entry that cannot be applied."""
        try:
            payload = entry.payload()
            keys = record_keys(self.schema, payload) if isinstance(payload, dict) else None
        except (EntryError, ValidationError):
            return None
        if keys is None:
            return None
        shown = self.index.holding(keys, entry.stamp)
        if shown is not None and with_history and not self.index.has_version(keys, entry.stamp):
            return None
        return shown

    # -- one operation -----------------------------------------------------------------------
    def apply_operation(self, op_id: str, *, final: bool = False) -> ApplyResult:
        header, entries = self.wal.read_operation(op_id)
        if header is None and not entries:
            log.warning("operation %s: nothing in the WAL to apply", op_id)
        return self.apply_unit([Unit(op_id, header, entries)], final=final)

    def apply_entries(self, op_id: str, entries: list[WalEntry], header: Mapping[str, Any] | None = None,
                      *, final: bool = False, mark: bool = True, history: bool = True) -> ApplyResult:
        return self.apply_unit([Unit(op_id, header, entries, mark)], final=final, history=history)

    def apply_unit(self, ops: Sequence[Unit], *, final: bool, history: bool = True) -> ApplyResult:
        """Apply several operations as one unit: every valid entry of all of them in one batched
        `Index.write_many`, then each operation's status. An entry that cannot be applied fails
        its own operation only (recorded when `final`, else EntryError after the others are
        written, so the queue retries the message); storage errors propagate before any status
        is written, so nothing reads applied that is not.

        history=False leaves the entries' history rows to the caller (`ApplyResult.versions`), who
        must write them before the operations' applied marks (the library buffers both)."""
        writes: list[IndexWrite] = []
        failures: dict[str, list[tuple[str, str]]] = {}
        for op in ops:
            for entry in op.entries:
                try:
                    writes.append(self.write_of(entry))
                except (EntryError, ValidationError) as e:
                    failures.setdefault(op.op_id, []).append((entry.stamp, str(e)))
        versions: list[dict] = []
        if not history:
            versions = [history_entity(w.keys, w.stamp, *w.history) for w in writes if w.history]
            writes = [replace(w, history=None) for w in writes]
        changed = self.index.write_many(writes, pool=self.writers()) if writes else 0
        result = ApplyResult(operations=len(ops), changed=changed, versions=versions)
        raising: dict[str, str] = {}
        applied: dict[tuple[str, str], dict] = {}  # one mark per status row, written together
        for op in ops:
            failed = failures.get(op.op_id, [])
            result.entries += len(op.entries) - len(failed)
            result.failed += len(failed)
            try:
                mark = self._finish(op, failed, final=final)
            except EntryError as e:
                raising[op.op_id] = str(e)
            else:
                if mark is not None:
                    applied[(mark["PartitionKey"], mark["RowKey"])] = mark
            log.info("operation %s: applied %d entries", op.op_id, len(op.entries) - len(failed))
        if applied:
            self.wal.write_marks(list(applied.values()))  # a transaction per shard
        if raising:
            raise UnitFailed(set(raising), result, "; ".join(raising.values()))
        return result

    def _finish(self, op: Unit, failures: list[tuple[str, str]], *, final: bool) -> dict | None:
        """An applied operation's status: its failures (recorded now when final, else EntryError),
        or the `applied` mark to write (None when it needs none)."""
        header = op.header
        if failures:
            reason = "; ".join(why for _, why in failures[:5])  # each names its entry
            if len(failures) > 5:
                reason += f"; and {len(failures) - 5} more"
            if final:
                log.error("operation %s: %d entries cannot be applied: %s", op.op_id, len(failures), reason)
                self.wal.record_failure(op.op_id, failures[0][0], reason)
                if header is not None:
                    self.wal.mark(op.op_id, FAILED_STATUS, row=header["RowKey"], error=reason,
                                  failed=len(failures), finished=self.clock().isoformat())
            else:
                if header is not None:
                    self.wal.mark(op.op_id, PENDING, row=header["RowKey"], last_error=reason)
                raise EntryError(f"operation {op.op_id}: {reason}")
            return None
        if op.mark and header is not None and header.get("status") != APPLIED:
            return self.wal.mark_entity(op.op_id, header["RowKey"], APPLIED, finished=self.clock().isoformat())
        return None

    # -- sweep -------------------------------------------------------------------------------
    def settled_cutoff(self, now: datetime | None = None) -> str:
        return ts((now or self.clock()) - self.settle_window)

    def sweep(self, now: datetime | None = None, *, collect: bool = True) -> ApplyResult:
        """Apply what the queue path missed, shard by shard, and advance the checkpoints."""
        now = now or self.clock()
        cutoff = self.settled_cutoff(now)
        total = self._each_shard(lambda shard: self.sweep_shard(shard, before=cutoff))
        if collect:
            total.tombstones_collected = self.collect_tombstones(now)
        return total

    def replay(self, since: datetime | None = None, now: datetime | None = None, *,
               on_shard: Callable[[int], None] | None = None) -> ApplyResult:
        """Apply every entry after the checkpoint (or after `since`) up to now; checkpoints only advance
        to the settled cutoff, and only where the replay covered everything after them.
        `on_shard(shard)` is called after each shard (progress bars)."""
        now = now or self.clock()
        after = ts(since) if since is not None else None

        def one(shard: int) -> ApplyResult:
            result = self.sweep_shard(shard, after=after, before=ts(now) + "~",
                                      advance_limit=self.settled_cutoff(now), skip_finished=since is None)
            if on_shard is not None:
                on_shard(shard)
            return result
        return self._each_shard(one)

    def _each_shard(self, work: Callable[[int], ApplyResult]) -> ApplyResult:
        """`work` for every shard, SHARD_CONCURRENCY shards at a time (their index writes share the
        `concurrency` writer threads), results added up."""
        total = ApplyResult()
        with ThreadPoolExecutor(min(SHARD_CONCURRENCY, SHARDS), thread_name_prefix="catalog-sweep") as pool:
            for result in pool.map(work, range(SHARDS)):
                total.add(result)
        return total

    def sweep_shard(self, shard: int, *, after: str | None = None, before: str,
                    advance_limit: str | None = None, skip_finished: bool = True) -> ApplyResult:
        checkpoint = self.wal.checkpoint(shard)
        start = checkpoint if after is None else after
        result = ApplyResult()
        done = start  # every entry <= done has been applied or recorded as failed
        stopped = False
        marks: list[dict] = []  # applied one-entry operations whose status mark never landed
        window: list[Unit] = []  # operations applied together, up to WINDOW_ENTRIES entries
        window_last, window_entries = done, 0

        def flush() -> None:
            nonlocal done, window_entries
            if window:
                result.add(self.apply_unit(window, final=True))
                window.clear()
                window_entries = 0
            done = window_last
        try:
            for op_id, header, entries, last_rk in _groups(self.wal.scan(shard, after=start, before=before)):
                if skip_finished and header is not None and header.get("status") == PENDING \
                        and len(entries) == 1 and entries[0].entity is header \
                        and self.reflected(entries[0], with_history=True):
                    # The queue trigger applied it but its buffered mark was lost: one read
                    # instead of applying it again, and the mark goes out in a batch.
                    marks.append(self.wal.mark_entity(op_id, header["RowKey"], APPLIED))
                elif header is None or header.get("status") == PENDING or not skip_finished:
                    # An operation without a header is a bulk write cut short: its entries are
                    # valid and applied all the same.
                    window.append(Unit(op_id, header, entries))
                    window_entries += len(entries)
                window_last = last_rk
                if not window:
                    done = last_rk
                if window_entries >= WINDOW_ENTRIES:
                    flush()
                if len(marks) >= MAX_BATCH:
                    self._write_marks(marks)
            flush()
        except TransientStorageError as e:
            log.warning("sweep of shard %d stopped at %s: %s", shard, done, e)
            result.stopped_shards.append(shard)
            stopped = True
        self._write_marks(marks)
        target = done if stopped else before
        if advance_limit is not None:
            target = min(target, advance_limit)
        if start <= checkpoint and target > checkpoint:
            try:
                result.checkpoints[shard] = self.wal.advance("checkpoint", shard, target)
            except CatalogError as e:
                log.warning("checkpoint of shard %d not advanced: %s", shard, e)
        return result

    def _write_marks(self, marks: list[dict]) -> None:
        """Best effort: a status left pending is still read as applied (service.operation derives
        it from the index) and the next sweep tries again."""
        try:
            self.wal.write_marks(marks)
        except CatalogError as e:
            log.warning("could not write %d status marks: %s", len(marks), e)
        marks.clear()

    # -- tombstones --------------------------------------------------------------------------
    def collect_tombstones(self, now: datetime | None = None) -> int:
        now = now or self.clock()
        horizon = ts(now - self.tombstone_retention)
        collected = 0
        for shard in range(SHARDS):
            mark = self.wal.progress("collected", shard)[0]
            bound = min(horizon, self.wal.checkpoint(shard))
            if bound <= mark:
                continue
            try:
                for item in self.wal.scan(shard, after=mark, before=bound):
                    if isinstance(item, WalEntry) and item.kind == DELETE:
                        collected += self._collect(item)
            except TransientStorageError as e:
                log.warning("tombstone collection of shard %d stopped: %s", shard, e)
                continue
            self.wal.advance("collected", shard, bound)
        return collected

    def _collect(self, entry: WalEntry) -> int:
        try:
            keys = record_keys(self.schema, entry.payload())
        except (CatalogError, AttributeError, TypeError):
            return 0
        return sum(self.index.collect_tombstone(pk, rk, entry.stamp) for pk, rk in keys.entities())


class UnitFailed(EntryError):
    """Some operations of a unit have entries that cannot be applied (yet); the others were."""

    def __init__(self, operations: set[str], result: ApplyResult, reason: str):
        self.operations, self.result = operations, result
        super().__init__(reason)


@dataclass(frozen=True)
class Unit:
    """One operation to apply: its id, its status entity (header, or the single entry), its entries,
    and whether applying it writes its `applied` mark now."""

    op_id: str
    header: Mapping[str, Any] | None
    entries: list[WalEntry]
    mark: bool = True


def _groups(items: Iterable[Entity | WalEntry]):
    """Consecutive scan items grouped by operation: (op id, header, entries, last RowKey)."""
    op_id, header, entries, last = None, None, [], None
    for item in items:
        if isinstance(item, WalEntry):
            item_op, rk = item.op_id, item.stamp
        else:
            item_op, rk = item["RowKey"], item["RowKey"]
        if item_op != op_id and op_id is not None:
            yield op_id, header, entries, last
            header, entries = None, []
        op_id = item_op
        if isinstance(item, WalEntry):
            entries.append(item)
            if is_status_entity(item.entity):
                header = item.entity  # a one-entry operation: entry and header in one entity
        else:
            header = item
        last = rk
    if op_id is not None:
        yield op_id, header, entries, last
