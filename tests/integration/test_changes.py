"""The change feed and record history.

The property: writers on several WAL shards, puts and deletes on few identities, crashes while
applying, duplicated and reordered deliveries, sweeps, and a reader paging the feed in random page
sizes, resuming from random `next` values it was given, while writing goes on. Every accepted
entry is read exactly once, in position order, and replaying the feed gives the index. On the
memory store and on Azurite."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog import codec
from catalog.adapters.memory import MemoryQueue, MemoryTableStore
from catalog.changes import ChangeFeed
from catalog.errors import ValidationError
from catalog.index import Index
from catalog.keys import record_keys
from catalog.materializer import Materializer
from catalog.service import CatalogService
from catalog.wal import DELETE, PUT, SHARDS, STAMP_END, Wal, shard_partition
from tests.helpers import SCHEMA, Crash, FaultyStore, StepClock, unique, visible_index
from tests.integration.test_function_app import call, svc

IDENTITIES = [{"sku": "a", "category": "x", "name": "1"}, {"sku": "a", "category": "y", "name": "1"},
              {"sku": "B", "category": "x", "name": "2"}]
SETTLE = timedelta(milliseconds=20)

steps = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.sampled_from([PUT, PUT, DELETE]),
              st.lists(st.integers(0, len(IDENTITIES) - 1), min_size=1, max_size=3)),
    st.tuples(st.just("deliver"), st.integers(0, 30), st.none() | st.integers(1, 3)),
    st.tuples(st.just("read"), st.integers(1, 5), st.integers(0, 6)),
    st.tuples(st.just("sweep")),
    st.tuples(st.just("wait"), st.integers(1, 40)),
), min_size=1, max_size=30)


def writers(store, clock, count=3):
    """Services sharing one catalog: each its own WAL shard (writer 2 picks one per operation)."""
    wal_table, table = unique("w"), unique("t")
    out = []
    for w in range(count):
        wal = Wal(store, wal_table, clock=clock)
        index = Index(store, table, SCHEMA)
        materializer = Materializer(wal, index, SCHEMA, settle_window=SETTLE)
        out.append(CatalogService(SCHEMA, wal, index, materializer, MemoryQueue(f"q{w}"),
                                  shard=(w * 5) % SHARDS if w < 2 else None).ensure())
    return out


def run(store, plan):
    clock = StepClock(step=timedelta(milliseconds=1))
    services = writers(store, clock)
    feed = ChangeFeed(services[0].wal, SETTLE)
    version = 0
    read: list[dict] = []
    nexts = [""]  # every `next` the reader was given, where it may resume
    for step in plan:
        if step[0] == "write":
            _, w, kind, idents = step
            service = services[w]
            if kind == PUT:
                records = []
                for i in idents:
                    version += 1
                    records.append(dict(IDENTITIES[i], v=version))
                service.submit(records)
            else:
                for i in idents:
                    service.submit([dict(IDENTITIES[i], v=-1)], apply_now=True)
                    service.delete(dict(IDENTITIES[i]), row_from=IDENTITIES[i]["name"],
                                   row_to=IDENTITIES[i]["name"])
        elif step[0] == "deliver":
            _, which, crash_after = step
            messages = [m for s in services for m in s.queue.messages]
            if messages:
                text = messages[which % len(messages)]  # any message, any number of times, any order
                service = services[which % len(services)]
                inner = service.index.store
                service.index.store = FaultyStore(inner, service.index.table, {crash_after} if crash_after else set())
                try:
                    service.apply_message(text)
                except Crash:
                    pass
                finally:
                    service.index.store = inner
        elif step[0] == "read":
            _, limit, back = step
            after = nexts[max(0, len(nexts) - 1 - back)]  # resume from the latest next, or an older one
            page = feed.page(after, limit)
            if after == nexts[-1]:
                read += [c.view() for c in page.items]
                nexts.append(page.next)
            else:
                # Re-reading from an older `next` gives the same entries as the first time, in order
                # (and after them, what has become final since).
                replayed = [c.view() for c in page.items]
                start = next((i for i, c in enumerate(read) if c["position"] > after), len(read))
                seen = min(len(replayed), len(read) - start)
                assert replayed[:seen] == read[start:start + seen]
                assert all(c["position"] > nexts[-1] for c in replayed[seen:])  # nothing appeared behind a next
        elif step[0] == "sweep":
            services[0].sweep()
        else:
            clock.now += timedelta(milliseconds=step[1])
    clock.now += SETTLE * 10  # everything written is final now
    while True:
        page = feed.page(nexts[-1], 7)
        read += [c.view() for c in page.items]
        nexts.append(page.next)
        if not page.items:
            break
    return services, read


def accepted_entries(service) -> list[tuple[str, str, dict]]:
    rows = [e for s in range(SHARDS)
            for e in service.wal.store.query(service.wal.table, shard_partition(s), rk_lt=STAMP_END)
            if e.get("kind") in (PUT, DELETE)]
    return sorted((e["RowKey"], "put" if e["kind"] == PUT else "delete", codec.decode_payload(e)) for e in rows)


def check(store, plan):
    services, read = run(store, plan)
    positions = [c["position"] for c in read]
    assert positions == sorted(set(positions))  # in order, none twice
    assert [(c["position"], c["kind"], c["record"]) for c in read] == accepted_entries(services[0])  # none missed
    # Replaying the feed gives the index (once every message is applied, whatever happened before).
    services[0].sweep(services[0].wal.clock() + timedelta(seconds=1))
    replayed: dict[str, dict] = {}
    for c in read:
        keys = record_keys(SCHEMA, c["record"])
        if c["kind"] == "put":
            replayed[keys.row_key] = c["record"]
        else:
            replayed.pop(keys.row_key, None)
    partitions = {pk for ident in IDENTITIES for pk in record_keys(SCHEMA, ident).partition_keys}
    expected = {(pk, rk): r for rk, r in replayed.items() for pk in record_keys(SCHEMA, r).partition_keys}
    assert visible_index(store, services[0].index, partitions) == expected


@settings(max_examples=120, deadline=None)
@given(steps)
def test_the_feed_gives_every_entry_once_in_order_in_memory(plan):
    check(MemoryTableStore(), plan)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_the_feed_gives_every_entry_once_in_order_on_azurite(azure_table_store, plan):
    check(azure_table_store, plan)


# -- the HTTP contract -------------------------------------------------------------------------------
def test_changes_route_pages_to_the_frontier(functions, app_env, monkeypatch):
    service = svc(app_env)
    service.feed.settle_window = timedelta(0)  # final at once: the route's paging is the point here
    service.submit([{"sku": f"s{i}", "category": "c", "name": f"n{i}"} for i in range(5)], apply_now=True)
    service.delete({"sku": "s1"}, apply_now=True)
    items, after = [], None
    for _ in range(10):
        resp, page = call(functions, "get_changes", params={"limit": "2", **({"after": after} if after else {})})
        assert resp.status_code == 200 and set(page) == {"items", "next", "frontier"}
        items += page["items"]
        after = page["next"]
        if not page["items"]:
            break
    assert [(c["kind"], c["record"]["sku"]) for c in items] == [("put", f"s{i}") for i in range(5)] + [
        ("delete", "s1")]
    assert items[-1]["record"] == {"sku": "s1", "category": "c", "name": "n1"}  # the record it deleted
    assert len({c["operation"] for c in items}) == 2 and all(c["time"].startswith("20") for c in items)
    resp, since = call(functions, "get_changes", params={"since": items[5]["time"]})
    assert since["items"] == items[5:]
    resp, empty = call(functions, "get_changes", params={"after": after})
    assert empty["items"] == [] and empty["next"] >= items[-1]["position"]


@pytest.mark.parametrize("params", [{"after": "yesterday"}, {"after": "1"}, {"since": "soon"},
                                    {"after": "20260101T000000000000Z", "since": "2026-01-01T00:00:00Z"},
                                    {"limit": "0"}, {"limit": "1001"}, {"wait": "61"}, {"colour": "red"}])
def test_bad_feed_parameters_are_400(functions, app_env, params):
    resp, problem = call(functions, "get_changes", params=params)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json", problem


def test_a_change_waits_for_the_frontier_before_it_is_served(functions, app_env):
    service = svc(app_env)
    service.submit([{"sku": "late", "category": "c", "name": "n"}], apply_now=True)
    resp, page = call(functions, "get_changes")  # the default settle window: not final yet
    assert page["items"] == [] and page["frontier"] < service.wal.clock().isoformat()
    service.feed.settle_window = timedelta(seconds=1)
    resp, page = call(functions, "get_changes", params={"wait": "5"})  # answered as soon as it is final
    assert [c["record"]["sku"] for c in page["items"]] == ["late"]


# -- history -------------------------------------------------------------------------------------
def test_history_of_one_record_with_as_of(functions, app_env):
    service = svc(app_env)
    ident = {"sku": "h1", "category": "c", "name": "n"}
    ops = [service.submit([dict(ident, v=1)], apply_now=True), service.submit([dict(ident, v=2)], apply_now=True)]
    service.submit([{"sku": "h1", "category": "other", "name": "n", "v": 9}], apply_now=True)  # one field differs
    ops.append(service.delete(ident, apply_now=True))
    resp, body = call(functions, "get_record_history", params=ident)
    assert resp.status_code == 200
    versions = body["items"]
    assert [(v["kind"], v["record"].get("v"), v["operation"]) for v in versions] == [
        ("put", 1, ops[0].operation), ("put", 2, ops[1].operation), ("delete", 2, ops[2].operation)]
    times = [v["time"] for v in versions]

    def as_of(moment: str) -> list:
        return call(functions, "get_record_history", params={**ident, "as_of": moment})[1]["items"]

    assert as_of("2000-01-01T00:00:00Z") == []  # before the first write
    assert as_of(times[0]) == versions[:1] and as_of(times[1]) == versions[1:2]  # between versions
    assert as_of("2999-01-01T00:00:00Z") == versions[2:]  # after the delete: the delete is in effect
    other = call(functions, "get_record_history", params={"sku": "h1", "category": "OTHER", "name": "n"})[1]
    assert [v["record"]["v"] for v in other["items"]] == [9]
    assert call(functions, "get_record_history", params={"sku": "none", "category": "c", "name": "n"})[1] == {
        "items": []}


@pytest.mark.parametrize("params,field", [({"sku": "a", "category": "c"}, "name"),
                                          ({"sku": "a", "name": "n"}, "category"),
                                          ({"sku": "a", "category": "c", "name": "n", "v": "1"}, "v"),
                                          ({"sku": "a", "category": "c", "name": "n", "as_of": "when"}, "as_of")])
def test_history_without_the_whole_identity_is_a_400_naming_the_field(functions, app_env, params, field):
    resp, problem = call(functions, "get_record_history", params=params)
    assert resp.status_code == 400 and problem["field"] == field


def test_history_costs_the_versions_of_the_record_not_the_catalog(app_env):
    service = svc(app_env)
    service.submit([{"sku": f"k{i}", "category": "c", "name": "n", "v": i} for i in range(300)], apply_now=True)
    for v in range(3):
        service.submit([{"sku": "k7", "category": "c", "name": "n", "v": 100 + v}], apply_now=True)
    reads = {"entities": 0}
    real = service.index.store

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def query(self, *args, **kwargs):
            for e in real.query(*args, **kwargs):
                reads["entities"] += 1
                yield e
    service.index.store = Counting()
    try:
        versions = service.history({"sku": "k7", "category": "c", "name": "n"})
    finally:
        service.index.store = real
    assert [v.record["v"] for v in versions] == [7, 100, 101, 102] and reads["entities"] == 4


def test_library_changes_and_history(storage_connection):
    from catalog import TableCatalogClient

    client = TableCatalogClient(storage_connection, unique("t"), index_keys="sku,category", row_key="name",
                                env={"CATALOG_SETTLE_SECONDS": "0"})
    client.insert({"sku": "a", "category": "c", "name": "n", "v": 1})
    client.insert_many([{"sku": f"b{i}", "category": "c", "name": "n"} for i in range(3)])
    client.delete({"sku": "a"})
    changes = list(client.changes())
    assert [(c.kind, c.record["sku"]) for c in changes] == [("put", "a"), ("put", "b0"), ("put", "b1"), ("put", "b2"),
                                                            ("delete", "a")]
    assert [c.position for c in client.changes(after=changes[2].position)] == [c.position for c in changes[3:]]
    assert list(client.changes(since=changes[-1].time)) == changes[-1:]
    history = client.history({"sku": "a", "category": "c", "name": "n"})
    assert [(c.kind, c.record.get("v")) for c in history] == [("put", 1), ("delete", 1)]
    assert client.history({"sku": "a", "category": "c", "name": "n"}, as_of=changes[0].time) == history[:1]
    with pytest.raises(ValidationError):
        list(client.changes(after="not a position"))
    json.dumps([c.view() for c in changes])  # every item is plain JSON
