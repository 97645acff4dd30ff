"""What `catalog reindex` records in an index table it builds, and the identity rules that follow.

Index tables built by `reindex` carry two entities in the partition `meta` (no index partition can
be called that: every index PartitionKey contains a space, see keys.py):
- `meta/schema`: the table's schema, the schema of the deployment whose WAL entries built it
  (`source_*`), the WAL table, `state` (building/ready) and `until`, the exclusive WAL stamp bound
  every entry below which is reflected in the table;
- `meta/reindex`: the progress of the current or last run (`after`: every entry up to it is done).

The core reads it (a deployment refuses an index table reindex has not finished); the reindex
tool writes it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .index import META_PARTITION, Index
from .settings import Schema

__all__ = ["META_PARTITION", "SCHEMA_ROW", "PROGRESS_ROW", "BUILDING", "READY", "IndexMeta", "read_index_meta",
           "same_identity", "IdentityRules"]
SCHEMA_ROW = "schema"
PROGRESS_ROW = "reindex"
BUILDING, READY = "building", "ready"


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
                "schema": self.schema.view(), "source_schema": self.source.view(),
                "until": self.until or None, "unindexable_entries": self.unindexable}


def read_index_meta(index: Index) -> IndexMeta | None:
    e = index.meta_get(SCHEMA_ROW)
    if e is None:
        return None
    return IndexMeta(Schema.from_props(e), Schema.from_props(e, "source_"), e.get("wal_table", ""),
                     e.get("state", BUILDING), e.get("until", ""), int(e.get("unindexable", 0) or 0), e.etag)


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
    def of(cls, meta: IndexMeta | None, schema: Schema) -> IdentityRules:
        if meta is None:
            return cls(schema)
        return cls(schema, meta.source, meta.until)
