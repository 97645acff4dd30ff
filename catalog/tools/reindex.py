"""reindex: build an index table from the WAL, under the current schema or a new one. Resumable.

The supported way to change a schema: build the new table while the deployment keeps serving the
old one, then point CATALOG_TABLE (and CATALOG_INDEX_KEYS/CATALOG_ROW_KEY) at it.

- The WAL is read in stamp order across shards, up to `until` (default: a settle window before
  now, so no entry still being written is passed over), and applied with the normal stamped,
  idempotent writes (`Materializer.apply_entry`/`Index.write`).
- Progress (`meta/reindex` in the target table: every entry up to `after` is applied) is saved
  every `save_every` entries. A run that stops, however it stops, is resumed by running it again:
  entries after the saved mark are applied again, which the stamp check makes harmless. A second
  run at the same time is refused (the progress entity is written with its ETag).
- Running it again later catches the table up with what the deployment accepted since.
- The table's schema and the source deployment's schema are recorded in `meta/schema` (see
  operations.py). Where the two identify records differently, an entry from the source replaces or
  deletes its *source* identity's record (IdentityRules): the new table then lists the records the
  old one does, rather than every version a record ever had under the new identity.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import codec
from ..errors import CatalogError, ConflictError, EntryError, ValidationError
from ..index import STAMP, TOMBSTONE
from ..index_meta import (
    BUILDING,
    PROGRESS_ROW,
    READY,
    SCHEMA_ROW,
    IdentityRules,
    IndexMeta,
    read_index_meta,
    same_identity,
)
from ..keys import normalize, partition_key, record_keys, row_range, value_text
from ..materializer import Materializer
from ..service import CatalogService
from ..settings import Schema, check_table_name
from ..store import Entity
from ..wal import PUT, WalEntry, parse_time, ts
from .progress import NO_PROGRESS, Progress

META_VERSION = 1
BATCH_ENTRIES = 1000  # WAL entries written as one batched unit


class ReindexError(CatalogError):
    """The target table cannot be (re)built as asked."""


@dataclass
class ReindexReport:
    table: str
    schema: Schema
    source: Schema
    until: str
    resumed_after: str | None
    entries: int = 0
    changed: int = 0
    removed: int = 0
    unindexable: int = 0
    unindexable_samples: list[dict] = field(default_factory=list)
    state: str = BUILDING
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"table": self.table, "schema": self.schema.describe(), "source_schema": self.source.describe(),
                "until": self.until, "resumed_after": self.resumed_after, "entries": self.entries,
                "index_entities_changed": self.changed, "records_removed_by_source_identity": self.removed,
                "unindexable_entries": self.unindexable, "unindexable_samples": self.unindexable_samples,
                "state": self.state, "seconds": round(self.seconds, 3), "notes": self.notes}


def reindex(service: CatalogService, target: str, *, schema: Schema | None = None,
            until: str | datetime | None = None, progress: Progress = NO_PROGRESS, save_every: int = 500,
            save_seconds: float = 5.0, on_entry: Callable[[int], None] | None = None,
            now: datetime | None = None, show: int = 20) -> ReindexReport:
    return _Reindex(service, target, schema, progress, save_every, save_seconds, on_entry, show).run(until, now)


class _Reindex:
    def __init__(self, service: CatalogService, target: str, schema: Schema | None, progress: Progress,
                 save_every: int, save_seconds: float, on_entry, show: int):
        self.service = service
        self.wal = service.wal
        self.target = check_table_name("--to", target)
        # The target table's bookkeeping rows, before its schema is known (the table's own Index
        # replaces this one once the meta row says which schema it is built with).
        self.index = service.index.sibling(self.target, schema or service.schema)
        self.wanted = schema
        self.progress = progress
        self.save_every = max(1, save_every)
        self.save_seconds = save_seconds
        self.on_entry = on_entry
        self.show = show
        self.etag: str | None = None
        self._batch: list = []  # entries waiting for _flush

    # -- the target table and its record of what it is --------------------------------------
    def _meta(self) -> IndexMeta:
        if self.target.lower() == self.wal.table.lower():
            raise ReindexError(f"--to {self.target} is the WAL table")
        self.index.create()
        meta = read_index_meta(self.index)
        if meta is None:
            if self.target.lower() == self.service.index.table.lower():
                raise ReindexError(f"{self.target} is the index table this deployment serves: build into a new "
                                   "table (to repair this one, use `catalog verify --repair` or `catalog recover`)")
            if not self.index.is_empty():
                raise ReindexError(f"table {self.target} already holds entities and was not built by reindex: "
                                   "choose a new table name")
            entity = {**(self.wanted or self.service.schema).to_props(),
                      **self.service.schema.to_props("source_"),
                      "wal_table": self.wal.table, "state": BUILDING, "until": "", "unindexable": 0,
                      "version": META_VERSION, "created": self.wal.clock().isoformat()}
            try:
                self.index.meta_insert(SCHEMA_ROW, entity)
            except ConflictError:
                pass  # another run created it just now: use what it recorded
            meta = read_index_meta(self.index)
            assert meta is not None
        if self.wanted is not None and self.wanted != meta.schema:
            raise ReindexError(f"table {self.target} is being built with {meta.schema.describe()}, not "
                               f"{self.wanted.describe()}: choose another table for that schema")
        if meta.wal_table and meta.wal_table.lower() != self.wal.table.lower():
            raise ReindexError(f"table {self.target} was built from WAL table {meta.wal_table}, "
                               f"not {self.wal.table}")
        return meta

    def _save(self, after: str, until: str) -> None:
        entity = {"after": after, "until": until, "updated": self.wal.clock().isoformat()}
        try:
            if self.etag is None:
                self.etag = self.index.meta_insert(PROGRESS_ROW, entity)
            else:
                self.etag = self.index.meta_replace(PROGRESS_ROW, entity, self.etag)
        except ConflictError as e:
            raise ReindexError(f"another reindex into {self.target} is running (its progress changed under this "
                               "one): let it finish, then run again") from e

    # -- the run --------------------------------------------------------------------------------
    def run(self, until: str | datetime | None, now: datetime | None) -> ReindexReport:
        started = time.monotonic()
        meta = self._meta()
        now = now or self.wal.clock()
        until_time = parse_time(until) if until is not None else now - self.service.materializer.settle_window
        if until_time > now:
            raise ValidationError(f"--until {until_time.isoformat()} is in the future")
        bound = ts(until_time) + "~"  # every stamp at or before until_time sorts below this
        saved = self.index.meta_get(PROGRESS_ROW)
        after = str(saved["after"]) if saved is not None else ""
        self.etag = saved.etag if saved is not None else None
        self.schema = meta.schema
        self.rules = IdentityRules(meta.schema, meta.source, bound)
        self.index = self.service.index.sibling(self.target, meta.schema)
        self.materializer = Materializer(self.wal, self.index, meta.schema, concurrency=1)
        report = self.report = ReindexReport(self.target, meta.schema, meta.source, bound, after or None)
        if not same_identity(meta.source, meta.schema):
            report.notes.append("the new schema identifies records by other fields than the source's: each "
                                "source entry replaces its source identity's record (one extra query per entry)")
        if after < bound:
            total = None
            if self.progress.enabled:
                self.progress.begin("reindex: counting WAL entries", None, "entries")
                total = self.wal.count_entries(after=after, before=bound)
                self.progress.end()
            self.progress.begin(f"reindex into {self.target}", total, "entries")
            done, unsaved, last_save = after, 0, time.monotonic()
            try:
                for item in self.wal.items(after=after, before=bound):
                    if not isinstance(item, WalEntry):
                        continue
                    self._apply(item)
                    report.entries += 1
                    done = item.stamp
                    unsaved += 1
                    self.progress.advance()
                    if self.on_entry is not None:
                        self.on_entry(report.entries)
                    if unsaved >= self.save_every or time.monotonic() - last_save > self.save_seconds:
                        self._flush()  # progress is saved only over what is written
                        self._save(done, bound)
                        unsaved, last_save = 0, time.monotonic()
                self._flush()
            except KeyboardInterrupt:
                self._flush()
                self._save(done, bound)  # a clean stop keeps everything done so far
                raise
            finally:
                self.progress.end()
            self._save(bound, bound)
        else:
            report.notes.append(f"already built up to {after}: nothing to do before --until")
        self.index.meta_merge(SCHEMA_ROW, {"state": READY, "until": max(meta.until, bound),
                                           "unindexable": meta.unindexable + report.unindexable,
                                           "updated": self.wal.clock().isoformat()})
        report.state = READY
        report.seconds = time.monotonic() - started
        if report.unindexable:
            report.notes.append(f"{report.unindexable} WAL entries cannot be indexed under {meta.schema.describe()} "
                                "(for example a record without one of the new index keys): those records are not "
                                "in the new table")
        return report

    def _unindexable(self, stamp: str, reason: str) -> None:
        self.report.unindexable += 1
        if len(self.report.unindexable_samples) < self.show:
            self.report.unindexable_samples.append({"wal_stamp": stamp, "reason": reason})

    def _flush(self) -> None:
        """Write the buffered entries as one batched unit (Index.write_many)."""
        if self._batch:
            self.report.changed += self.index.write_many(self._batch, pool=self.service.materializer.writers())
            self._batch = []

    def _apply(self, entry: WalEntry) -> None:
        try:
            payload = entry.record()
            group = self.rules.grouping(entry.stamp)
            if group is None:  # the common case: buffered, written in batches of BATCH_ENTRIES
                self._batch.append(self.materializer.write_of(entry))
                if len(self._batch) >= BATCH_ENTRIES:
                    self._flush()
                return
            self._flush()  # an entry that replaces another identity sees everything before it written
            source_identity = record_keys(group, payload).row_key
            keys, problem = None, None
            if entry.kind == PUT:
                try:
                    keys = record_keys(self.schema, payload)
                except ValidationError as e:
                    problem = str(e)
            self.report.removed += self._remove(group, source_identity, payload, entry.stamp,
                                                keep=keys.row_key if keys else None)
            if keys is not None:
                record = codec.join_chunks(entry.entity)
                self.report.changed += self.index.write(keys, entry.stamp, record, history=(PUT, record))
            elif problem:
                self._unindexable(entry.stamp, problem)
        except (EntryError, ValidationError) as e:
            self._unindexable(entry.stamp, str(e))

    def _remove(self, group: Schema, source_identity: str, payload: dict, stamp: str, keep: str | None) -> int:
        """Tombstone (at `stamp`) what the same source identity wrote earlier under other keys."""
        removed = 0
        for e in self._candidates(group, payload):
            if e["RowKey"] == keep or e.get(TOMBSTONE) or str(e.get(STAMP, "")) >= stamp:
                continue
            try:
                record = codec.decode_payload(e)
                if record_keys(group, record).row_key != source_identity:
                    continue  # written by another source identity since: not ours to remove
                keys = record_keys(self.schema, record)
            except (EntryError, ValidationError, AttributeError, TypeError):
                continue
            removed += 1 if self.index.write(keys, stamp, None) else 0
        return removed

    def _candidates(self, group: Schema, payload: dict) -> Iterable[Entity]:
        """Live entities that may hold a record of the payload's source identity: one partition (and
        one row value) when an index key of the table is a key field of the source, else a scan."""
        table = self.schema
        # Equal under the source's matching must imply equal under the table's, or a partition misses some.
        usable = (not table.case_sensitive) or group.case_sensitive
        key = next((k for k in table.index_keys if k in group.key_fields), None) if usable else None
        if key is not None:
            pk = partition_key(key, normalize(value_text(payload[key], key), table.case_sensitive))
            low = high = None
            if table.row_key in group.key_fields:
                text = value_text(payload[table.row_key], table.row_key)
                low, high = row_range(text, text, table.case_sensitive)
            return self.index.live(pk, rk_ge=low, rk_lt=high)
        if not any("scans" in n for n in self.report.notes):
            self.report.notes.append("no index key of the new schema is a key field of the source schema: each "
                                     "source entry scans the new table (slow on a large catalog)")
        return list(self.index.records())
