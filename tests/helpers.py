"""Shared test helpers: services on a given store, fault-injecting store wrappers, index snapshots."""
from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from catalog import codec
from catalog.index import TOMBSTONE, Index
from catalog.materializer import Materializer
from catalog.service import CatalogService
from catalog.settings import Schema
from catalog.wal import Wal

SCHEMA = Schema(("sku", "category"), "name")


def unique(prefix: str = "t") -> str:
    return prefix + uuid.uuid4().hex[:12]


class StepClock:
    """A clock that moves forward a fixed step on every read: distinct, increasing stamps."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(milliseconds=1)):
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += self.step
            return self.now


def make_service(store, schema: Schema = SCHEMA, *, queue=None, clock=None, settle=timedelta(0),
                 retention=timedelta(days=14), table=None, wal_table=None) -> CatalogService:
    wal = Wal(store, wal_table or unique("w"), **({"clock": clock} if clock else {}))
    index = Index(store, table or unique("t"), schema)
    materializer = Materializer(wal, index, schema, settle_window=settle, tombstone_retention=retention)
    return CatalogService(schema, wal, index, materializer, queue).ensure()


class Crash(Exception):
    """Stands for a process dying mid-way."""


class FaultyStore:
    """Wraps a store; raises `exc` on chosen write calls to one table (counted from 1)."""

    WRITES = ("insert", "replace", "merge", "delete", "insert_batch", "write_batch")

    def __init__(self, inner, table: str, fail_on: set[int] | None = None, exc: Exception | None = None):
        self.inner = inner
        self.table = table
        self.fail_on = fail_on or set()
        self.exc = exc or Crash("injected crash")
        self.writes = itertools.count(1)

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in self.WRITES:
            return attr

        def write(table, *args, **kwargs):
            if table == self.table and next(self.writes) in self.fail_on:
                raise self.exc
            return attr(table, *args, **kwargs)
        return write


def visible_index(store, index: Index, partitions) -> dict[tuple[str, str], dict]:
    """{(PartitionKey, RowKey): record} of the non-tombstone entities in the given partitions."""
    out = {}
    for pk in partitions:
        for e in store.query(index.table, pk):
            if not e[TOMBSTONE]:
                out[(pk, e["RowKey"])] = codec.decode_payload(e)
    return out


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition",
               interval: float = 0.05) -> object:
    """Poll `condition` until it returns something truthy (and return that); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
