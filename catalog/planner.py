"""The read path: a query's plan, the race that finds its smallest index partition, and its pages.

A read is an AND of equality filters, at least one on an index key. Every record is stored whole
in each of its index partitions, so any one filter's partition answers the whole query: read it,
check every filter against the stored record. The cheapest is the partition with the fewest
entities, which the catalog does not count (a counter per partition would be a hot entity that
every apply fights over). It is found by a race instead:

- every index-key filter's partition is read in RowKey order, page by page, all in the same
  rounds (concurrently), with the same page size; the first page is the size the caller asked
  for (limit + 1), every later one the size of all before it (doubling, at most 1,000);
- a partition's matches are complete up to the RowKey it has read to. So as soon as one
  partition has been read to its end, or has more matches than the page needs, that partition
  gives the answer and the race stops: the smallest partition ends first.

Each partition of k is read at most about twice as far as the winner (one round's overshoot), so
a query reads at most k x max(2 s, limit + 1) entities, s the matches-bearing entities of the
smallest partition within the row range. The order the filters were given in changes nothing:
the partitions are read in key order and the plan is the set of them. The same holds for pages
after the first (a continuation names the RowKey to resume after and is bound to the set of
partitions) and for `count`, which races to the end of the smallest partition.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import codec
from .errors import ValidationError
from .keys import (
    LONE_SURROGATE,
    MAX_KEY_UTF16,
    SEP,
    check_read_value,
    encode_part,
    is_valid_table_key,
    normalize,
    partition_key,
    prefix_range,
    row_range,
    utf16_len,
    value_text,
)
from .settings import Schema
from .store import TableStore

T = TypeVar("T")
Item = TypeVar("Item")
READ_THREADS = 16  # a read of every WAL shard (the feed, /health) or history partition at once
TOMBSTONE = "x"  # the index entity's tombstone flag (index.TOMBSTONE)
MAX_PAGE = 1000  # Azure returns at most 1,000 entities per query request
COUNT_FIRST_PAGE = 100  # the first round of a count, which has no page size of its own
MAX_FILTER_TEXT = 32 * 1024  # a filter on a field that is not an index key never reaches storage


@dataclass(frozen=True)
class Page:
    items: list[dict]
    continuation: str | None


@dataclass(frozen=True)
class ReadPlan:
    """A validated read: the index partitions that can answer it (one per index-key filter, sorted,
    so the order the filters came in changes nothing), the checks every record must pass (every
    filter, as (field, normalized text)), and the RowKey bounds of the row range or prefix."""

    partitions: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]
    low: str | None = None  # RowKey >= low
    high: str | None = None  # RowKey < high
    case_sensitive: bool = False

    @property
    def tag(self) -> str:
        """What a continuation token is bound to: the set of partitions (for one partition the same
        tag earlier versions gave, so their tokens keep working)."""
        return _tag("\n".join(self.partitions))

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Each filter compares the field's value as an index value is compared: strings as they are
        (case-folded unless the schema is case-sensitive), numbers and booleans as their JSON text.
        A record without the field, or whose value is an object, a list or null, does not match."""
        for name, text in self.checks:
            if name not in record:
                return False
            try:
                if normalize(value_text(record[name], name), self.case_sensitive) != text:
                    return False
            except ValidationError:  # an object, a list, null: never equal to a filter value
                return False
        return True


def plan_read(schema: Schema, filters: Mapping[str, Any], *, row_from: str | None = None,
              row_to: str | None = None, row_prefix: str | None = None) -> ReadPlan:
    """Validate a read before anything reaches storage; ValidationError (400) names what is wrong."""
    keys = ", ".join(schema.index_keys)
    if not filters:
        raise ValidationError(f"at least one filter is required, on an index key ({keys})")
    partitions, checks = [], []
    for name, value in filters.items():
        if not isinstance(name, str) or not name or LONE_SURROGATE.search(name):
            raise ValidationError(f"a filter needs a field name that is text, got {codec.printable(str(name))}",
                                  field=codec.escape_surrogates(str(name)))
        text = normalize(value_text(value, name), schema.case_sensitive)
        if name in schema.index_keys:
            check_read_value(text, name, room=MAX_KEY_UTF16 - utf16_len(encode_part(name)) - len(SEP))
            partitions.append(partition_key(name, text))
        else:
            check_read_value(text, name, room=MAX_FILTER_TEXT)
        checks.append((name, text))
    if not partitions:
        raise ValidationError(f"at least one filter must be on an index key ({keys}); "
                              f"{', '.join(map(codec.printable, filters))} {'is' if len(filters) == 1 else 'are'} not",
                              field=next(iter(filters)))
    low: str | None
    high: str | None
    if row_prefix is not None:
        if row_from is not None or row_to is not None:
            raise ValidationError("row_prefix cannot be combined with row_from or row_to", field="row_prefix")
        low, high = prefix_range(row_prefix, schema.case_sensitive)
    else:
        low, high = row_range(row_from, row_to, schema.case_sensitive)
    return ReadPlan(tuple(sorted(partitions)), tuple(checks), low, high, schema.case_sensitive)


def project(record: dict, fields: Sequence[str] | None) -> dict:
    """Only the named top-level fields (absent ones left out); the whole record without `fields`."""
    if fields is None:
        return record
    wanted = set(fields)
    return {k: v for k, v in record.items() if k in wanted}


@dataclass
class _Run:
    """One partition's part in a race: where its next page starts and what it has matched so far."""

    pk: str
    resume: object | None = None
    started: bool = False
    ended: bool = False
    matches: list[tuple[str, dict]] = field(default_factory=list)
    count: int = 0


class IndexTable(Protocol):
    store: TableStore
    table: str


class Reader:
    """Runs planned reads against one index table, through its owner's store (so a store swapped
    on the owner is the one read). Owns the threads reads of several partitions go out on: a
    race's partitions, /health's and the change feed's shards, a history's partitions."""

    def __init__(self, owner: IndexTable):
        self.owner = owner
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def page(self, plan: ReadPlan, *, limit: int | None = None, continuation: str | None = None,
             fields: Sequence[str] | None = None) -> Page:
        """Up to `limit` matching records after the continuation, in RowKey order (all, without a limit)."""
        if limit is not None and limit < 1:
            raise ValidationError("limit must be a positive integer", field="limit")
        after = decode_continuation(continuation, plan.tag) if continuation else None
        if limit is None:
            items = [project(r, fields) for r in self.records(plan, after=after)]
            return Page(items, None)
        matches = self._race(plan, after, want=limit + 1).matches
        items = [project(record, fields) for _, record in matches[:limit]]
        token = encode_continuation(plan.tag, matches[limit - 1][0]) if len(matches) > limit else None
        return Page(items, token)

    def records(self, plan: ReadPlan, *, after: str | None = None) -> Iterator[dict]:
        """Every matching record, in RowKey order, a race of MAX_PAGE at a time."""
        while True:
            matches = self._race(plan, after, want=MAX_PAGE + 1).matches
            for _, record in matches[:MAX_PAGE]:
                yield record
            if len(matches) <= MAX_PAGE:
                return
            after = matches[MAX_PAGE - 1][0]

    def count(self, plan: ReadPlan) -> int:
        """Exact: the matches of the smallest partition, read to its end (the others race it)."""
        return self._race(plan, None, want=None).count

    def _race(self, plan: ReadPlan, after: str | None, want: int | None) -> _Run:
        """Read the plan's partitions in rounds until one of them answers (module docstring): it has
        ended, or holds `want` matches. With want=None only counts are kept, and the race runs
        until a partition ends."""
        runs = [_Run(pk) for pk in plan.partitions]
        size = min(want, MAX_PAGE) if want is not None else COUNT_FIRST_PAGE
        read_so_far = 0
        while True:
            live = [run for run in runs if not run.ended]
            self.each(functools.partial(self._advance, plan=plan, after=after, size=size, want=want), live)
            for run in runs:  # key order: the same winner whatever order the filters came in
                if run.ended or (want is not None and len(run.matches) >= want):
                    return run
            read_so_far += size
            size = min(MAX_PAGE, max(size, read_so_far))

    def _advance(self, run: _Run, plan: ReadPlan, after: str | None, size: int, want: int | None) -> None:
        entities, run.resume = self.owner.store.query_page(
            self.owner.table, run.pk, page_size=size, resume=run.resume if run.started else None,
            rk_gt=after, rk_ge=plan.low, rk_lt=plan.high, equals={TOMBSTONE: False})
        run.started = True
        run.ended = run.resume is None
        for e in entities:
            record = codec.decode_payload(e)
            if not plan.matches(record):
                continue
            run.count += 1
            if want is not None and len(run.matches) < want:
                run.matches.append((e["RowKey"], record))

    def each(self, work: Callable[[Item], T], items: Iterable[Item]) -> list[T]:
        """`work` on each item, together on the reader's threads (a lone one on this thread),
        results in order."""
        items = list(items)
        if len(items) <= 1:
            return [work(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="catalog-read")
            pool = self._pool
        return list(pool.map(work, items))


# -- continuation tokens ------------------------------------------------------------------------
TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2800  # a RowKey of 512 UTF-16 units is at most 1,536 bytes of UTF-8, base64 adds a third
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_TOKEN_CHARS}}}")


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_continuation(tag: str, rk: str) -> str:
    """An opaque token: where the next page starts (a RowKey) and the tag of the plan it belongs
    to. Not secret (it names a position the caller could query anyway), but checked."""
    raw = json.dumps({"v": TOKEN_VERSION, "p": tag, "r": rk}, ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_continuation(token: str, tag: str) -> str:
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
    if data["p"] != tag:
        raise invalid("it belongs to another query")
    return rk
