"""What the operations commands share: settings as the Functions app reads them, status, recover,
one stamp-ordered pass over every WAL shard, and the bookkeeping `reindex` leaves in an index table.

Plain functions over a `CatalogService`; the CLI (catalog/cli.py) only parses arguments and prints.
verify, reindex and import/export live in their own modules (verify.py, reindex.py, transfer.py).

Index tables built by `reindex` carry two entities in the partition `meta` (no index partition can
be called that: every index PartitionKey contains a space, see keys.py):
- `meta/schema`: the table's schema, the schema of the deployment whose WAL entries built it
  (`source_*`), the WAL table, `state` (building/ready) and `until`, the exclusive WAL stamp bound
  every entry below which is reflected in the table;
- `meta/reindex`: the progress of the current or last run (`after`: every entry up to it is done).
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import SettingsError, ValidationError
from .materializer import ApplyResult
from .progress import NO_PROGRESS, Progress
from .service import CatalogService
from .settings import Schema
from .store import Entity, TableStore
from .wal import DELETE, PUT, SHARDS, Wal, WalEntry, parse_operation_id, parse_time, shard_partition

LOCAL_SETTINGS = "local.settings.json"
META_PARTITION = "meta"
SCHEMA_ROW = "schema"
PROGRESS_ROW = "reindex"
BUILDING, READY = "building", "ready"


# -- settings ----------------------------------------------------------------------------------
def load_env(settings_path: str | Path | None, environ: Mapping[str, str], cwd: str | Path = ".") -> dict[str, str]:
    """local.settings.json `Values` (the given file, or the one in `cwd` if there is one), overlaid by
    the environment: the same precedence the Functions host applies."""
    explicit = settings_path is not None
    path = Path(settings_path) if explicit else Path(cwd) / LOCAL_SETTINGS
    values: dict[str, str] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as e:
            raise SettingsError(str(path), f"cannot read it as JSON: {e}") from e
        raw = data.get("Values", {}) if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            raise SettingsError(str(path), '"Values" must be an object of setting names to values')
        for name, value in raw.items():
            if value is None:
                continue
            values[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    elif explicit:
        raise SettingsError("--settings", f"{path} does not exist")
    values.update(environ)
    return values


# -- status ------------------------------------------------------------------------------------
def status(service: CatalogService, now: datetime | None = None, *, failures: int = 5) -> dict:
    """Schema, per-shard checkpoints and lag, pending and failed operations, queue depths."""
    view: dict[str, Any] = {"schema": service.schema_view()}
    view.update(service.health(now, failures=failures))
    for key, queue in (("queue", service.queue), ("poison_queue", service.poison_queue)):
        view[key] = {"name": queue.name, "depth": queue.depth()} if queue is not None else None
    meta = read_index_meta(service.wal.store, service.index.table)
    view["index_table"] = meta.view() if meta else None
    return view


# -- recover -----------------------------------------------------------------------------------
def recover(service: CatalogService, since: str | datetime | None = None, *, progress: Progress = NO_PROGRESS,
            now: datetime | None = None) -> ApplyResult:
    """`CatalogService.recover`, with a progress bar that follows the shards."""
    moment = parse_time(since) if since is not None else None
    progress.begin("recover", SHARDS, "shards")
    total = service.materializer.replay(moment, now, on_shard=lambda _: progress.advance())
    progress.end()
    return total


def apply_result_view(result: ApplyResult) -> dict:
    return {"operations": result.operations, "entries": result.entries, "failed": result.failed,
            "index_entities_changed": result.changed, "stopped_shards": [shard_partition(s) for s in
                                                                        result.stopped_shards],
            "checkpoints": {shard_partition(s): c for s, c in sorted(result.checkpoints.items())}}


# -- the WAL in one order ----------------------------------------------------------------------
def wal_items(wal: Wal, *, after: str = "", before: str | None = None) -> Iterator[Entity | WalEntry]:
    """Headers and entries of every shard with after < stamp < before, merged into stamp order.

    Stamps are unique across shards (the op id names its shard), so the merge is a total order: the
    order the index converges to. An operation's header sorts right before its own entries."""
    def keyed(shard: int):
        for item in wal.scan(shard, after=after, before=before):
            yield (item.stamp if isinstance(item, WalEntry) else item["RowKey"]), shard, item

    for _, _, item in heapq.merge(*(keyed(s) for s in range(SHARDS))):
        yield item


def count_entries(wal: Wal, *, after: str = "", before: str | None = None) -> int:
    """WAL entries (not headers) in a stamp range: the total a progress bar needs."""
    return sum(1 for item in wal_items(wal, after=after, before=before) if isinstance(item, WalEntry))


def read_entry(wal: Wal, stamp: str) -> WalEntry | None:
    """The WAL entry with this stamp, read again (None if there is none)."""
    op_id = stamp.rsplit("-", 1)[0]
    try:
        shard = parse_operation_id(op_id)
    except ValidationError:
        return None
    e = wal.store.get(wal.table, shard_partition(shard), stamp)
    if e is None or e.get("kind") not in (PUT, DELETE):
        return None
    return WalEntry(shard, stamp, op_id, e["kind"], e)


# -- tables built by reindex -------------------------------------------------------------------
def schema_props(schema: Schema, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}index_keys": json.dumps(list(schema.index_keys)), f"{prefix}row_key": schema.row_key,
            f"{prefix}case_sensitive": schema.case_sensitive}


def schema_from(entity: Mapping[str, Any], prefix: str = "") -> Schema:
    return Schema(tuple(json.loads(entity[f"{prefix}index_keys"])), entity[f"{prefix}row_key"],
                  bool(entity[f"{prefix}case_sensitive"]))


@dataclass(frozen=True)
class IndexMeta:
    schema: Schema
    source: Schema
    wal_table: str
    state: str
    until: str
    unindexable: int = 0
    etag: str | None = None

    def view(self) -> dict:
        return {"built_by": "reindex", "state": self.state, "wal_table": self.wal_table,
                "schema": _schema_view(self.schema), "source_schema": _schema_view(self.source),
                "until": self.until or None, "unindexable_entries": self.unindexable}


def _schema_view(schema: Schema) -> dict:
    return {"index_keys": list(schema.index_keys), "row_key": schema.row_key,
            "case_sensitive": schema.case_sensitive}


def read_index_meta(store: TableStore, table: str) -> IndexMeta | None:
    e = store.get(table, META_PARTITION, SCHEMA_ROW)
    if e is None:
        return None
    return IndexMeta(schema_from(e), schema_from(e, "source_"), e.get("wal_table", ""), e.get("state", BUILDING),
                     e.get("until", ""), int(e.get("unindexable", 0) or 0), e.etag)


def same_identity(a: Schema, b: Schema) -> bool:
    """Whether two schemas identify records alike (same key fields, same matching)."""
    return set(a.key_fields) == set(b.key_fields) and a.case_sensitive == b.case_sensitive


@dataclass(frozen=True)
class IdentityRules:
    """Which identity a WAL entry replaced or deleted under.

    An entry accepted by the deployment a table was reindexed from (stamp < `until`) acted on a
    record of the *source* schema's identity: a put replaced it, a delete removed it. Under a new
    schema with other key fields that record may have another identity, so such an entry first
    removes whatever the same source identity last wrote, then writes its record under the table's
    keys. That keeps the table's content what it was (a record re-categorised under the old
    schema is not listed under both categories in the new one). Entries at or after `until` act
    on the table's own identity. `grouping` returns the source schema where it differs, else None.
    """

    table: Schema
    source: Schema | None = None
    until: str = ""

    def grouping(self, stamp: str) -> Schema | None:
        if self.source is None or stamp >= self.until or same_identity(self.source, self.table):
            return None
        return self.source

    @classmethod
    def of(cls, meta: IndexMeta | None, schema: Schema) -> "IdentityRules":
        if meta is None:
            return cls(schema)
        return cls(schema, meta.source, meta.until)
