"""Azurite + `python -m catalog serve` as subprocesses: 500 records over HTTP, single and bulk, applied
by the queue trigger, queried by every index key and a row range, deleted by filter, health drains."""
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.helpers import wait_until

CATEGORIES = ["Tools", "Garden", "Kitchen", "O'Brien & Sons", "a/b#c?d"]


def record(i: int) -> dict:
    return {"sku": f"SKU-{i:04d}", "category": CATEGORIES[i % len(CATEGORIES)], "name": f"item {i:04d}",
            "price": i * 1.25, "tags": ["x", {"i": i}], "operation": "insert"}


def post(url, body):
    resp = requests.post(url, json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"] == f"/api/operations/{resp.json()['operation']}"
    return resp.json()


def status(served, op):
    resp = requests.get(served.url(f"operations/{op}"), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["status"]


def wait_applied(served, ops, timeout=120):
    remaining = set(ops)

    def done():
        for op in list(remaining):
            state = status(served, op)
            assert state != "failed", f"operation {op} failed"
            if state == "applied":
                remaining.discard(op)
        return not remaining
    wait_until(done, timeout=timeout, what=f"{len(remaining)} operations to be applied", interval=0.2)


def query_all(served, **params):
    items, token = [], None
    while True:
        p = dict(params, limit="37")
        if token:
            p["continuation"] = token
        resp = requests.get(served.url("records"), params=p, timeout=30)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        items += page["items"]
        token = page["continuation"]
        if not token:
            return items


def test_five_hundred_records_end_to_end(served):
    records = [record(i) for i in range(500)]
    with ThreadPoolExecutor(8) as pool:  # 200 single-record requests from 8 clients
        singles = list(pool.map(lambda r: post(served.url("records"), r)["operation"], records[:200]))
    bulk = [post(served.url("records"), records[200:300]),
            post(served.url("records"), {"records": records[300:500]})]
    assert [b["records"] for b in bulk] == [100, 200]
    wait_applied(served, singles + [b["operation"] for b in bulk])

    for i in (0, 199, 250, 499):
        got = requests.get(served.url("records"), params={"sku": f"sku-{i:04d}"}, timeout=10).json()["items"]
        assert got == [records[i]]
    for c in CATEGORIES:
        got = query_all(served, category=c.lower())
        assert got == sorted((r for r in records if r["category"] == c), key=lambda r: r["name"])
    ranged = query_all(served, category="tools", row_from="item 0100", row_to="item 0200")
    assert [r["name"] for r in ranged] == [f"item {i:04d}" for i in range(100, 201) if i % 5 == 0]
    both = query_all(served, category="garden", sku="SKU-0001")
    assert both == [records[1]]

    resp = requests.delete(served.url("records"), params={"category": "kitchen", "row_to": "item 0249"},
                           timeout=60)
    assert resp.status_code == 202 and resp.json()["matched"] == 50
    wait_applied(served, [resp.json()["operation"]])
    assert [r["name"] for r in query_all(served, category="kitchen")] == \
        [f"item {i:04d}" for i in range(250, 500) if i % 5 == 2]
    assert requests.get(served.url("records"), params={"sku": "SKU-0002"}, timeout=10).json()["items"] == []

    health = wait_until(lambda: (h := requests.get(served.url("health"), timeout=10).json())["pending"] == 0 and h,
                        timeout=60, what="/health to show zero pending")
    assert health["failed_operations"] == 0 and len(health["shards"]) == 16
