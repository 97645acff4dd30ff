"""The planner against a brute-force reading of the same records: any filters (index keys and other
fields, in any order), row ranges and prefixes, any page size, deletes leaving tombstones. Paging
through returns exactly the matching records, each once, in row-key order; count agrees; the
order of the filters changes neither the answer nor the entities read. Memory store and Azurite."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.adapters.memory import MemoryTableStore
from catalog.keys import encode_part, record_keys
from catalog.settings import Schema
from tests.helpers import make_service

SCHEMA3 = Schema(("a", "b", "c"), "name")
VALUES = ["x", "X", "y", "z/1", "é"]


records = st.lists(st.fixed_dictionaries({
    "a": st.sampled_from(VALUES), "b": st.sampled_from(VALUES), "c": st.sampled_from(VALUES[:2]),
    "name": st.sampled_from(["n1", "n2", "N3", "n 4", "m#5", "é6"]),
    "kind": st.sampled_from(["red", "Red", "blue"]), "n": st.integers(0, 3),
}), min_size=0, max_size=40)

queries = st.fixed_dictionaries({
    "index": st.lists(st.tuples(st.sampled_from(SCHEMA3.index_keys), st.sampled_from(VALUES)), min_size=1, max_size=3,
                      unique_by=lambda t: t[0]),
    "other": st.lists(st.tuples(st.sampled_from(["kind", "n", "absent"]), st.sampled_from(["red", "1", "blue"])),
                      max_size=2, unique_by=lambda t: t[0]),
    "range": st.sampled_from([{}, {"row_from": "n1", "row_to": "n2"}, {"row_prefix": "n"}, {"row_prefix": "é"},
                              {"row_to": "m"}]),
    "limit": st.integers(1, 7),
    "deleted": st.sets(st.integers(0, 39), max_size=5),
})


def expected(live: list[dict], filters: dict, bounds: dict) -> list[dict]:
    def text(value) -> str:
        return str(value).casefold()

    def keep(r: dict) -> bool:
        if any(name not in r or text(r[name]) != text(value) for name, value in filters.items()):
            return False
        name = r["name"].casefold()
        if "row_prefix" in bounds:
            return name.startswith(bounds["row_prefix"].casefold())
        key = encode_part(name)  # ranges follow the order of the encoded keys (README, "Keys")
        return (bounds.get("row_from") is None or key >= encode_part(bounds["row_from"])) and \
            (bounds.get("row_to") is None or key <= encode_part(bounds["row_to"]))

    return sorted((r for r in live if keep(r)), key=lambda r: record_keys(SCHEMA3, r).row_key)


class Reads:
    def __init__(self, inner):
        self.inner, self.entities = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def query_page(self, *args, **kwargs):
        page, resume = self.inner.query_page(*args, **kwargs)
        self.entities += len(page)
        return page, resume


def check(store, rows: list[dict], q: dict) -> None:
    svc = make_service(store, SCHEMA3)
    by_identity = {record_keys(SCHEMA3, r).row_key: r for r in rows}  # later writes replace earlier ones
    if rows:
        svc.submit(rows, apply_now=True)
    gone = [r for i, r in enumerate(by_identity.values()) if i in q["deleted"]]
    for r in gone:
        svc.delete({k: r[k] for k in ("a", "b", "c")}, row_from=r["name"], row_to=r["name"], apply_now=True)
    live = [r for r in by_identity.values() if r not in gone]
    filters = dict(q["index"]) | dict(q["other"])
    want = expected(live, filters, q["range"])
    reads = Reads(svc.index.store)
    svc.index.store = reads
    answers, costs = [], []
    for order in (list(filters.items()), list(reversed(filters.items()))):
        reads.entities = 0
        items, token, pages = [], None, 0
        while True:
            page = svc.query(dict(order), limit=q["limit"], continuation=token, **q["range"])
            assert len(page.items) <= q["limit"]
            items += page.items
            token, pages = page.continuation, pages + 1
            if token is None:
                break
            assert pages <= len(live) + 1
        answers.append(items)
        costs.append(reads.entities)
        assert svc.count(dict(order), **q["range"]) == len(want)
    assert answers[0] == answers[1] == want
    assert costs[0] == costs[1]


@settings(max_examples=150, deadline=None)
@given(records, queries)
def test_planned_queries_match_a_brute_force_reading_in_memory(rows, q):
    check(MemoryTableStore(), rows, q)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records, queries)
def test_planned_queries_match_a_brute_force_reading_on_azurite(azure_table_store, rows, q):
    check(azure_table_store, rows, q)
