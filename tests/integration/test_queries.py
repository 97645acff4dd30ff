"""The read contract through the function app on Azurite: planning (the smallest partition answers,
whatever the order of the filters), filters on any field, projections, prefixes, counts, paging,
and waiting for an operation."""
from __future__ import annotations

import threading
import time

import pytest

from catalog.keys import partition_key
from tests.integration.test_function_app import call, deliver, queue_texts, svc


class EntityReads:
    """Wraps a store: counts the entities its queries hand back, per partition."""

    def __init__(self, inner):
        self.inner = inner
        self.by_partition: dict[str, int] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _count(self, pk: str, n: int) -> None:
        with self._lock:
            self.by_partition[pk] = self.by_partition.get(pk, 0) + n

    def query_page(self, table, pk, **kwargs):
        page, resume = self.inner.query_page(table, pk, **kwargs)
        self._count(pk, len(page))
        return page, resume

    def query(self, table, pk, **kwargs):
        for e in self.inner.query(table, pk, **kwargs):
            self._count(pk, 1)
            yield e

    @property
    def total(self) -> int:
        return sum(self.by_partition.values())

    def reset(self) -> None:
        self.by_partition.clear()


BROAD = 300


@pytest.fixture
def catalog(functions, app_env):
    """A catalog with one broad partition (category=big: BROAD records, each its own sku) and a few
    other records; storage reads counted from here on."""
    service = svc(app_env)
    records = [{"sku": f"S-{i:04d}", "category": "big", "name": f"item {i:04d}", "n": i, "even": i % 2 == 0}
               for i in range(BROAD)]
    records += [{"sku": "S-0007", "category": "small", "name": "item 0007", "n": 7, "even": False},
                {"sku": "lone", "category": "small", "name": "lonely", "colour": "Red", "nested": {"a": 1},
                 "tags": ["x"], "nothing": None}]
    service.submit(records, apply_now=True)
    reads = EntityReads(service.index.store)
    service.index.store = reads
    yield service, reads, records
    service.index.store = reads.inner


def get(functions, name="get_records", **params):
    resp, body = call(functions, name, params=params)
    assert resp.status_code == 200, body
    return body


def test_either_order_of_a_broad_and_a_narrow_filter_reads_the_narrow_one(functions, catalog):
    _, reads, _ = catalog
    answers, costs = [], []
    for params in ({"category": "big", "sku": "S-0150"}, {"sku": "S-0150", "category": "big"}):
        reads.reset()
        answers.append(get(functions, **params))
        costs.append(dict(reads.by_partition))
    assert answers[0] == answers[1] == {"items": [{"sku": "S-0150", "category": "big", "name": "item 0150", "n": 150,
                                                   "even": True}], "continuation": None}
    assert costs[0] == costs[1]  # the same plan, read for read
    # The narrow partition ended in the first round; the broad one was read one page deep, never through.
    assert costs[0][partition_key("sku", "s-0150")] == 1
    assert costs[0][partition_key("category", "big")] <= 101 < BROAD


def test_the_smallest_partition_answers_even_when_neither_is_tiny(functions, catalog):
    _, reads, records = catalog
    reads.reset()
    # category=small (2 records) against sku=S-0007 (2 records: big and small) and a row range.
    page = get(functions, sku="s-0007", category="SMALL")
    assert page["items"] == [records[BROAD]]
    reads.reset()
    everything = []
    token = None
    while True:
        params = {"category": "big", "even": "true", "limit": "40", **({"continuation": token} if token else {})}
        page = get(functions, **params)
        everything += page["items"]
        token = page["continuation"]
        if token is None:
            break
    assert [r["n"] for r in everything] == list(range(0, BROAD, 2))


def test_paging_one_item_at_a_time_through_a_planned_query_returns_each_once(functions, catalog):
    _, _, records = catalog
    expected = sorted((r for r in records if r["category"] == "big" and r["n"] < 40), key=lambda r: r["name"])
    seen, token = [], None
    for _ in range(100):
        params = {"category": "big", "row_to": "item 0039", "limit": "1"}
        if token:
            params["continuation"] = token
        page = get(functions, **params)
        assert len(page["items"]) <= 1
        seen += page["items"]
        token = page["continuation"]
        if not token:
            break
    assert seen == expected
    # Two index keys, limit=1: the token names the plan (the set of partitions), not the first filter.
    first = get(functions, category="big", sku="S-0007", limit="1")
    assert first["items"][0]["name"] == "item 0007" and first["continuation"] is None
    both = get(functions, category="small", n="7", limit="1")
    again = get(functions, n="7", category="small", limit="1")
    assert both == again and both["items"] == [records[BROAD]] and both["continuation"] is None


def test_a_token_of_one_order_pages_the_other(functions, catalog):
    one = get(functions, category="big", even="false", limit="3")
    other = get(functions, even="false", category="big", limit="3", continuation=one["continuation"])
    assert [r["n"] for r in one["items"] + other["items"]] == [1, 3, 5, 7, 9, 11]
    resp, problem = call(functions, "get_records", params={"category": "small", "continuation": one["continuation"]})
    assert resp.status_code == 400 and problem["field"] == "continuation"


@pytest.mark.parametrize("params,names", [
    ({"category": "big", "n": "17"}, ["item 0017"]),  # a number, as its JSON text
    ({"category": "big", "n": "17.0"}, []),  # ...exactly its JSON text
    ({"category": "big", "even": "TRUE", "row_to": "item 0004"}, ["item 0000", "item 0002", "item 0004"]),  # boolean
    ({"category": "small", "colour": "red"}, ["lonely"]),  # a string of other case
    ({"category": "small", "colour": "blue"}, []),
    ({"category": "small", "missing": "x"}, []),  # a record without the field
    ({"category": "small", "nested": "{'a': 1}"}, []),  # objects, lists and null never match
    ({"category": "small", "tags": "x"}, []),
    ({"category": "small", "nothing": "null"}, []),
    ({"category": "small", "nothing": ""}, []),
])
def test_filters_on_fields_that_are_not_index_keys(functions, catalog, params, names):
    page = get(functions, **params)
    assert [r["name"] for r in page["items"]] == names


def test_fields_keeps_only_the_named_top_level_fields(functions, catalog):
    page = get(functions, sku="lone", fields="name,colour,nested,unknown")
    assert page["items"] == [{"name": "lonely", "colour": "Red", "nested": {"a": 1}}]
    page = get(functions, sku="lone", fields="unknown")
    assert page["items"] == [{}]


def test_count_equals_the_items_paged_out(functions, catalog):
    cases = [{"category": "big"}, {"category": "big", "even": "true"}, {"category": "big", "row_prefix": "item 01"},
             {"category": "big", "row_from": "item 0100", "row_to": "item 0149", "even": "false"},
             {"sku": "S-0007"}, {"sku": "nothing"}]
    for params in cases:
        items, token = [], None
        while True:
            page = get(functions, **params, limit="64", **({"continuation": token} if token else {}))
            items += page["items"]
            token = page["continuation"]
            if token is None:
                break
        assert get(functions, "count_records", **params) == {"count": len(items)}, params
    assert get(functions, "count_records", category="big")["count"] == BROAD
    for bad in ({"category": "big", "limit": "3"}, {"category": "big", "fields": "a"}, {"colour": "red"}, {}):
        resp, problem = call(functions, "count_records", params=bad)
        assert resp.status_code == 400 and resp.mimetype == "application/problem+json", bad


def test_row_prefix_with_escaped_characters_in_the_row_key(functions, app_env):
    service = svc(app_env)
    names = ["a/b 1", "a/b 2", "a/bz", "a/c", "a.", "a.b", "a", "ab", "A/B 3", "naïve/ü", "naïve/v", "x#?\\%'", "x#"]
    service.submit([{"sku": f"s{i}", "category": "p", "name": n} for i, n in enumerate(names)], apply_now=True)

    def prefixed(prefix: str) -> list[str]:
        return [r["name"] for r in get(functions, category="p", row_prefix=prefix)["items"]]

    assert sorted(prefixed("a/b")) == sorted(["a/b 1", "a/b 2", "a/bz", "A/B 3"])  # case-insensitive
    assert sorted(prefixed("a/b ")) == sorted(["a/b 1", "a/b 2", "A/B 3"])
    assert prefixed("a.") == ["a.", "a.b"]  # the bound after "." is past "/", which no key holds
    assert sorted(prefixed("a")) == sorted(n for n in names if n.lower().startswith("a"))
    assert prefixed("naïve/") == ["naïve/v", "naïve/ü"]
    assert sorted(prefixed("x#")) == ["x#", "x#?\\%'"]
    assert prefixed("x#?\\%'") == ["x#?\\%'"]
    assert prefixed("zzz") == []
    assert get(functions, "count_records", category="p", row_prefix="a/")["count"] == 5


def test_wait_returns_as_soon_as_the_operation_is_applied(functions, app_env, storage_connection):
    _, body = call(functions, "post_records", "POST", body={"sku": "w", "category": "c", "name": "n"})
    op = body["operation"]
    message = queue_texts(app_env, storage_connection)[0]
    started = time.monotonic()
    delivered = threading.Timer(0.5, deliver, args=(functions, message))
    delivered.start()
    try:
        resp, view = call(functions, "get_operation", params={"wait": "30"}, route_params={"id": op})
    finally:
        delivered.join()
    took = time.monotonic() - started
    assert resp.status_code == 200 and view["status"] == "applied"
    assert took < 30  # it answered when the operation was applied, not when the wait ran out


def test_wait_answers_pending_after_the_seconds_given(functions, app_env):
    _, body = call(functions, "post_records", "POST", body={"sku": "w2", "category": "c", "name": "n"})
    started = time.monotonic()
    resp, view = call(functions, "get_operation", params={"wait": "1"}, route_params={"id": body["operation"]})
    assert resp.status_code == 200 and view["status"] == "pending"
    assert time.monotonic() - started >= 1.0
    resp, view = call(functions, "get_operation", params={"wait": "0"}, route_params={"id": body["operation"]})
    assert view["status"] == "pending"


@pytest.mark.parametrize("wait", ["61", "-1", "1.5", "ten", "", "٣", "+1"])
def test_a_wait_that_is_not_0_to_60_whole_seconds_is_a_400(functions, app_env, wait):
    resp, problem = call(functions, "get_operation", params={"wait": wait},
                         route_params={"id": "20260101T000000000000Z-0100000000aa"})
    assert resp.status_code == 400 and problem["field"] == "wait"


def test_library_query_and_count_take_the_same_options(storage_connection):
    from catalog import TableCatalogClient
    from tests.helpers import unique

    client = TableCatalogClient(storage_connection, unique("t"), index_keys="sku,category", row_key="name")
    for i in range(6):
        client.insert({"sku": f"k{i}", "category": "c", "name": f"n{i}", "price": i, "note": "x" * i})
    assert client.query({"category": "c", "price": 3}) == [{"sku": "k3", "category": "c", "name": "n3", "price": 3,
                                                            "note": "xxx"}]
    assert client.query({"category": "C"}, row_prefix="N", fields=["name", "price"])[:2] == [
        {"name": "n0", "price": 0}, {"name": "n1", "price": 1}]
    assert client.query({"category": "c"}, row_from="n2", row_to="n3", fields="sku") == [{"sku": "k2"}, {"sku": "k3"}]
    assert client.count({"category": "c"}) == 6 and client.count({"category": "c"}, row_prefix="n5") == 1
    assert client.count({"category": "c", "sku": "k4"}) == 1
    assert client.query({"sku": "k1"}) == [{"sku": "k1", "category": "c", "name": "n1", "price": 1, "note": "x"}]
