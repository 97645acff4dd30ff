"""The seed-compatible library API: `TableCatalogClient` and the module functions.

Same constructor arguments and environment names as az-table-catalog 1.0.x; `insert` and
`delete` are applied before they return, as they were there. What changed is what the seed got
wrong: records round-trip exactly, re-inserts replace, every value works as a key, one bad WAL
entry never blocks the others, and the schema lock is persisted with the tables.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .bootstrap import build_service, table_store
from .changes import Change, start_position
from .errors import CatalogError
from .materializer import ApplyResult
from .settings import Settings
from .wal import SHARDS


class SchemaLockedError(CatalogError, RuntimeError):
    """configure() on a client whose schema is already set (the seed raised RuntimeError too)."""


class TableCatalogClient:
    def __init__(self, connection_string: str | None = None, table_name: str | None = None,
                 wal_name: str | None = None, index_keys: str | list[str] | None = None,
                 row_key: str | None = None, *, case_sensitive: bool | None = None,
                 env: Mapping[str, str] | None = None, **service_options: Any) -> None:
        self.settings = Settings.for_library(
            os.environ if env is None else env, connection_string=connection_string, table_name=table_name,
            wal_name=wal_name, index_keys=index_keys, row_key=row_key, case_sensitive=case_sensitive)
        # The library applies writes itself: it needs no queue.
        store = service_options.pop("store", None) or table_store(self.settings)
        # One WAL shard per client, so its status marks batch up (the shards still spread the
        # writes of many clients); marks are flushed on close() and at interpreter exit.
        self.service = build_service(self.settings, store=store, queue=None, shard=secrets.randbelow(SHARDS),
                                     deferred_marks=True, **service_options)

    def close(self) -> None:
        """Write what is buffered (status marks). The client stays usable."""
        self.service.flush()

    def __enter__(self) -> TableCatalogClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def index_keys(self) -> list[str]:
        return list(self.settings.schema.index_keys)

    @property
    def row_key(self) -> str:
        return self.settings.schema.row_key

    def configure(self, index_keys: str | list[str], row_key: str) -> None:
        raise SchemaLockedError("Schema is already configured and locked.")

    def query(self, filter: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None, fields: Iterable[str] | str | None = None) -> list[dict]:
        """Every record matching all the equality filters, in row key order.

        Filters may name any top-level field, at least one of them an index key; the query reads
        the smallest of the filtered index partitions. `row_from`/`row_to` (inclusive) or
        `row_prefix` bound the row key; `fields` keeps only those top-level fields of each record."""
        return self.service.query_all(filter, row_from=row_from, row_to=row_to, row_prefix=row_prefix,
                                      fields=_field_names(fields))

    def count(self, filter: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None) -> int:
        """How many records `query` would return with the same arguments (exact)."""
        return self.service.count(filter, row_from=row_from, row_to=row_to, row_prefix=row_prefix)

    def changes(self, after: str | None = None, since: str | None = None) -> Iterator[Change]:
        """Every accepted put and delete after a position (or since a time; from the beginning with
        neither), in order, up to the frontier: a later call from the last `position` yields what
        has become final since, never an entry twice, never one missed."""
        return self.service.feed.changes(start_position(after, since))

    def history(self, identity: Mapping[str, Any], as_of: str | None = None) -> list[Change]:
        """Every version of one record (a dict with its index and row key values), oldest first; with
        `as_of` (ISO 8601), the one in effect at that time."""
        self.service.flush()  # this client's own recent inserts: their history rows wait with their marks
        return self.service.history(identity, as_of=as_of)

    def insert(self, record: dict) -> dict:
        """Insert or replace one record; it is in the index when this returns."""
        self.service.submit([record], apply_now=True)
        return record

    def insert_many(self, records: list[dict]) -> str:
        """Insert many records as one logged operation; returns its operation id."""
        accepted = self.service.submit(records, apply_now=True)
        # Only a delete that matches nothing has no operation; a submit always logs one.
        assert accepted.operation is not None, "submit returned no operation id"
        return accepted.operation

    def delete(self, filter: Mapping[str, Any], *, row_from: str | None = None,
               row_to: str | None = None) -> int:
        """Delete every record matching the filter; returns how many matched."""
        return self.service.delete(filter, row_from=row_from, row_to=row_to, apply_now=True).count

    def recover(self, start_time: str | None = None) -> ApplyResult:
        """Replay the WAL from the checkpoints, or from `start_time` (ISO 8601)."""
        return self.service.recover(start_time)


def _field_names(fields: Iterable[str] | str | None) -> list[str] | None:
    if fields is None:
        return None
    return fields.split(",") if isinstance(fields, str) else list(fields)


_client: TableCatalogClient | None = None


def _get_client() -> TableCatalogClient:
    global _client
    if _client is None:
        _client = TableCatalogClient()
    return _client


def configure(index_keys: str | list[str], row_key: str, **kwargs: Any) -> None:
    global _client
    if _client is not None:
        raise SchemaLockedError("Catalog already initialized.")
    _client = TableCatalogClient(index_keys=index_keys, row_key=row_key, **kwargs)


def query(filter: Mapping[str, Any], **kwargs: Any) -> list[dict]:
    return _get_client().query(filter, **kwargs)


def insert(record: dict) -> dict:
    return _get_client().insert(record)


def delete(filter: Mapping[str, Any], **kwargs: Any) -> int:
    return _get_client().delete(filter, **kwargs)


def recover(start_time: str | None = None) -> ApplyResult:
    return _get_client().recover(start_time)


def reset() -> None:
    """Forget the module-level client (tests, or re-configuring in a REPL)."""
    global _client
    _client = None
