"""The change feed and record history: the WAL read as a stream of changes, and one identity's versions.

The feed. Every accepted put and delete is a WAL entry whose stamp (its RowKey, `<op id>-<seq>`,
the op id starting with the acceptance time) orders it against every other entry, across shards
(stamps compare as plain strings). A stamp is the entry's *position*. The feed serves entries only
below the *frontier*, `now - settle window`: the WAL write deadline plus clock skew, past which no
entry stamped earlier can still appear (settings.py has the argument). So a page is final: a
consumer that resumes after any `next` it was given never misses an entry nor sees one twice.

A page merges the 16 shards: each shard is read from the position in RowKey order, a page at a
time (the first about limit/16 entries, four times more for a shard read again), and entries are
handed out in stamp order up to the lowest position every shard still being read has reached. Its
cost is one request per shard plus what a skewed shard needs, and the entries read.

History. The applier writes every version of an identity (put, or delete with the record it
removed) to the index table's history partitions (index.history_entity); reading one identity's
history is one RowKey range, in order, so it costs its versions, never the WAL.
"""
from __future__ import annotations

import heapq
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import codec
from .errors import ValidationError
from .store import Entity
from .wal import DELETE, HEADER, PUT, SHARDS, STAMP_END, Wal, parse_time, shard_partition, time_of, ts

log = logging.getLogger(__name__)

DEFAULT_FEED_LIMIT = 100
MAX_FEED_LIMIT = 1000
IDLE_POLL = 2.0  # seconds between looks for a new entry while a `wait` finds none
# A position: an entry's stamp, an operation id, or a bare time (what `since` and an empty page give).
_POSITION = re.compile(r"\d{8}T\d{12}Z(-\d{2}[0-9a-f]{10}(-\d{5})?)?")


@dataclass(frozen=True)
class Change:
    """One accepted put or delete: where it is in the feed, which operation it belongs to, and the
    record it wrote (or, for a delete, the record as it was when the delete was accepted)."""

    position: str
    operation: str
    kind: str  # "put" or "delete"
    record: Any
    time: str  # ISO 8601, UTC: when it was accepted

    def view(self) -> dict:
        return {"position": self.position, "operation": self.operation, "kind": self.kind, "record": self.record,
                "time": self.time}


@dataclass(frozen=True)
class FeedPage:
    items: list[Change]
    next: str  # resume after this position: every entry up to it has been served
    frontier: datetime  # no entry stamped before this time can still appear

    def view(self) -> dict:
        return {"items": [c.view() for c in self.items], "next": self.next, "frontier": self.frontier.isoformat()}


def change_of(stamp: str, kind: str, entity: Entity | dict) -> Change:
    return Change(stamp, stamp.rsplit("-", 1)[0], "delete" if kind == DELETE else "put",
                  codec.decode_payload(entity), time_of(stamp).isoformat())


def check_position(value: str) -> str:
    if not isinstance(value, str) or not _POSITION.fullmatch(value):
        raise ValidationError(f"not a feed position: {codec.printable(str(value))}; pass a `position` or `next` "
                              "the feed gave, unchanged", field="after")
    return value


def start_position(after: str | None, since: str | datetime | None) -> str:
    """Where a read starts: after a position, or at a time (entries accepted at or after it)."""
    if after is not None and since is not None:
        raise ValidationError("give after or since, not both", field="since")
    if after is not None:
        return check_position(after)
    if since is not None:
        return ts(parse_time(since))  # a bare time sorts below every stamp of that microsecond
    return ""


MAX_CURSORS = 8  # reading states kept for the next page of recent readers (an LRU)
MAX_KEPT_BYTES = 16 * 1024 * 1024  # a state holding more read-ahead than this is not kept


@dataclass
class _Shard:
    shard: int
    size: int
    resume: object | None = None
    started: bool = False
    ended: bool = False
    reached: str = ""  # every entry of this shard up to here has been read
    buffered: deque = field(default_factory=deque)  # (stamp, kind, entity) read but not handed out


@dataclass
class _Cursor:
    """One read of the WAL in progress: from `start`, below `bound` (the frontier it was started
    with), and each shard's place in it."""

    start: str
    bound: str
    frontier: datetime
    shards: list[_Shard]


def _one_by_one(work: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    return [work(item) for item in items]


class ChangeFeed:
    """Reads the WAL in stamp order up to the frontier. `each(work, items)` runs work on items
    together (the service gives its reader's threads), so the shards are read at once."""

    def __init__(self, wal: Wal, settle_window: timedelta, clock: Callable[[], datetime] | None = None,
                 each: Callable[[Callable[[Any], Any], Iterable[Any]], list[Any]] = _one_by_one):
        self.wal = wal
        self.settle_window = settle_window
        self.clock = clock or wal.clock
        self._each = each
        self._lock = threading.Lock()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()

    def frontier(self, now: datetime | None = None) -> datetime:
        return (now or self.clock()) - self.settle_window

    def page(self, after: str = "", limit: int = DEFAULT_FEED_LIMIT, *, now: datetime | None = None) -> FeedPage:
        """Up to `limit` changes after the position, in order, all below the frontier."""
        if not 1 <= limit <= MAX_FEED_LIMIT:
            raise ValidationError(f"limit must be from 1 to {MAX_FEED_LIMIT}", field="limit")
        frontier = self.frontier(now)
        cursor = self._resume(after, ts(frontier))
        if cursor is None:
            if after >= ts(frontier):
                return FeedPage([], after, frontier)
            first = min(1000, math.ceil(limit * 1.25 / SHARDS))
            cursor = _Cursor(after, ts(frontier), frontier, [_Shard(s, first, reached=after) for s in range(SHARDS)])
        start, bound, shards = cursor.start, cursor.bound, cursor.shards
        items: list[Change] = []
        while len(items) < limit:
            self._each(lambda sh: self._read(sh, start, bound), [sh for sh in shards if not sh.buffered
                                                                  and not sh.ended])
            reading = [sh.reached for sh in shards if not sh.ended]
            safe = min(reading) if reading else bound  # every entry up to here has been read, in every shard
            heap = [(sh.buffered[0][0], sh.shard) for sh in shards if sh.buffered]
            heapq.heapify(heap)
            while heap and len(items) < limit and heap[0][0] <= safe:
                _, s = heapq.heappop(heap)
                stamp, kind, entity = shards[s].buffered.popleft()
                try:
                    items.append(change_of(stamp, kind, entity))
                except Exception as e:  # noqa: BLE001 - an unreadable entry is logged, never served broken
                    log.error("change feed: entry %s cannot be read, left out: %s", stamp, e)
                if shards[s].buffered:
                    heapq.heappush(heap, (shards[s].buffered[0][0], s))
            if not reading and not any(sh.buffered for sh in shards):
                return FeedPage(items, bound, cursor.frontier)  # everything below the frontier was served
        self._keep(items[-1].position, cursor)
        return FeedPage(items, items[-1].position, cursor.frontier)

    def _resume(self, after: str, bound: str) -> _Cursor | None:
        """The reading state a page left behind at `after` (its `next`), if this instance served it:
        the rest of each shard's page is buffered and each shard's query goes on where it stopped,
        so a consumer reading page after page reads every entry once. It serves up to the frontier
        it was read with (an earlier one is as final), unless the clock has gone back since."""
        with self._lock:
            cursor = self._cursors.pop(after, None)
        return cursor if cursor is not None and cursor.bound <= bound else None

    def _keep(self, position: str, cursor: _Cursor) -> None:
        kept = sum(len(value) for sh in cursor.shards for _, _, e in sh.buffered for value in e.values()
                   if isinstance(value, bytes | bytearray))
        if kept > MAX_KEPT_BYTES:
            return
        with self._lock:
            self._cursors[position] = cursor
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)

    def _read(self, sh: _Shard, after: str, bound: str) -> None:
        entities, sh.resume = self.wal.store.query_page(
            self.wal.table, shard_partition(sh.shard), page_size=sh.size, resume=sh.resume if sh.started else None,
            rk_gt=after, rk_lt=bound)
        sh.started, sh.ended = True, sh.resume is None
        sh.size = min(1000, sh.size * 4)  # a shard read again is a busy one: what it reads ahead is kept
        for e in entities:
            rk = e["RowKey"]
            sh.reached = rk
            if e.get("kind") in (PUT, DELETE):  # not a header
                sh.buffered.append((rk, e["kind"], e))

    def wait_page(self, after: str, limit: int, wait: float) -> FeedPage:
        """`page`, or, while it is empty, until an entry becomes final or `wait` seconds pass."""
        deadline = time.monotonic() + wait
        while True:
            page = self.page(after, limit)
            left = deadline - time.monotonic()
            if page.items or left <= 0:
                return page
            upcoming = self.next_stamp(after)
            if upcoming is None:
                pause = IDLE_POLL
            else:  # it becomes final when the frontier passes its time
                pause = (time_of(upcoming) - self.frontier()).total_seconds() + 0.01
            time.sleep(max(0.01, min(pause, left)))

    def next_stamp(self, after: str) -> str | None:
        """The lowest stamp after the position in any shard, final or not (one request per shard)."""
        def first(shard: int) -> str | None:
            for e in self.wal.store.query(self.wal.table, shard_partition(shard), rk_gt=after, rk_lt=STAMP_END,
                                          page_size=1, select=("kind",)):
                if e.get("kind") != HEADER:
                    return e["RowKey"]
            return None
        found = [stamp for stamp in self._each(first, range(SHARDS)) if stamp is not None]
        return min(found) if found else None

    def changes(self, after: str = "") -> Iterator[Change]:
        """Every change after the position, up to the frontier (the library's generator)."""
        while True:
            page = self.page(after, MAX_FEED_LIMIT)
            yield from page.items
            if len(page.items) < MAX_FEED_LIMIT:
                return
            after = page.next


def history_changes(entities: list[Entity], as_of: datetime | None = None) -> list[Change]:
    """The versions of one identity (its history rows, oldest first) as changes; with `as_of`, only
    the one in effect at that time (none if nothing had been written yet)."""
    versions = []
    for e in entities:
        stamp = e["RowKey"].rsplit(" ", 1)[1]
        versions.append(change_of(stamp, e.get("k", PUT), e))
    if as_of is not None:
        bound = ts(as_of) + "~"  # every stamp of that microsecond or before sorts below it
        versions = [v for v in versions if v.position < bound][-1:]
    return versions
