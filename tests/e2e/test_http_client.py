"""CatalogHttpClient against the real function_app.py served by `python -m catalog serve` on Azurite:
every method, paging and bulk splitting at scale, waiting on applied and failed operations, the error
classes, and retries through a proxy that loses answers, counted in the WAL."""
from __future__ import annotations

import base64
import json
from collections import Counter

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from catalog import (
    CatalogHttpClient,
    HttpBadRequestError,
    HttpNotFoundError,
    HttpTooLargeError,
    Operation,
    OperationFailed,
)
from catalog.bootstrap import build_service
from catalog.settings import Settings
from catalog.wal import PendingEntry
from tests.e2e.conftest import ServedApp
from tests.faultproxy import FaultProxy, Request


@pytest.fixture
def fresh(storage_connection, tmp_path):
    """A served app of its own (its own tables), for tests that count what was written."""
    app = ServedApp(storage_connection, tmp_path / "host.log")
    yield app
    app.stop()


def upstream(app: ServedApp) -> tuple[str, int]:
    return "127.0.0.1", app.port


def record(i: int, category: str = "c") -> dict:
    return {"sku": f"SKU-{i:05d}", "category": category, "name": f"item {i:05d}", "i": i, "even": i % 2 == 0}


def test_every_method(served):
    with CatalogHttpClient(served.base) as client:
        assert client.schema()["index_keys"] == ["sku", "category"] and client.schema()["row_key"] == "name"
        assert client.health()["status"] == "ok"

        first = client.insert({"sku": "A-1", "category": "Tools", "name": "hammer", "price": 12.5, "tags": ["x"]})
        assert first.id and first.action == "insert" and first.count == 1
        applied = client.wait(first, timeout=30)
        assert applied.status == "applied" and applied.id == first.id and applied.finished is not None
        assert client.operation(first.id).status == "applied"

        ops = client.insert_many(
            [{"sku": f"A-{i}", "category": "Tools", "name": name, "price": i * 1.5, "active": i % 2 == 0}
             for i, name in enumerate(["saw", "drill", "rasp", "awl"], start=2)])
        assert [op.count for op in ops] == [4]
        assert client.wait(ops[0].id, timeout=30).status == "applied"

        assert list(client.query({"sku": "a-1"})) == [
            {"sku": "A-1", "category": "Tools", "name": "hammer", "price": 12.5, "tags": ["x"]}]
        assert [r["name"] for r in client.query({"category": "tools"})] == ["awl", "drill", "hammer", "rasp", "saw"]
        assert [r["name"] for r in client.query({"category": "tools"}, row_from="d", row_to="r")] == ["drill",
                                                                                                     "hammer"]
        assert list(client.query({"category": "tools"}, row_prefix="RA", fields=["sku"])) == [{"sku": "A-4"}]
        # numbers and booleans filter as their JSON text
        assert [r["name"] for r in client.query({"category": "tools", "price": 4.5})] == ["drill"]
        assert [r["name"] for r in client.query({"category": "tools", "active": True})] == ["rasp", "saw"]
        assert client.count({"category": "tools"}) == 5
        assert client.count({"category": "tools"}, row_prefix="h") == 1

        gone = client.delete({"category": "tools"}, row_from="r")
        assert gone.action == "delete" and gone.count == 2 and gone.id
        assert client.wait(gone, timeout=30).status == "applied"
        assert client.count({"category": "tools"}) == 3
        nothing = client.delete({"category": "no such"})
        assert nothing == Operation(id=None, status="applied", action="delete", count=0)
        assert client.wait(nothing) is nothing


def test_insert_many_5000_in_one_call_then_page_2500_by_100(served):
    """5,000 records from a generator: five requests of 1,000; then one category of 2,500 read back
    100 at a time through a counting proxy: 25 pages, every record once, in row-key order."""
    proxy = FaultProxy(upstream(served), drop=lambda request: False)
    try:
        with CatalogHttpClient(proxy.base()) as client:
            ops = client.insert_many(record(i, "even" if i % 2 == 0 else "odd") for i in range(5000))
            assert [op.count for op in ops] == [1000] * 5 and len({op.id for op in ops}) == 5
            posts = [e for e in proxy.exchanges if e.method == "POST"]
            assert len(posts) == 5 and all(e.status == 202 for e in posts)
            for op in ops:
                assert client.wait(op, timeout=120).status == "applied"

            before = len(proxy.exchanges)
            names = [r["name"] for r in client.query({"category": "even"}, limit=100)]
            pages = [e for e in proxy.exchanges[before:] if e.path.startswith("/api/records?")]
            assert names == [f"item {i:05d}" for i in range(0, 5000, 2)]  # each once, in row-key order
            assert len(pages) == 25 and all("limit=100" in e.path for e in pages)
            assert all(len(e.json()["items"]) == 100 for e in pages)
            assert client.count({"category": "odd"}) == 2500
            assert client.count({"category": "odd", "even": False}, row_from="item 01000", row_to="item 01999") == 500
    finally:
        proxy.close()


def test_error_classes(served):
    with CatalogHttpClient(served.base) as client:
        with pytest.raises(HttpBadRequestError) as caught:
            client.insert({"sku": "E-1", "category": "Errors"})
        assert caught.value.status == 400 and caught.value.field == "name" and caught.value.index is None

        good = [{"sku": f"E-{i}", "category": "Errors", "name": f"e{i}"} for i in range(1200)]
        good[1100] = {"sku": "E-bad", "category": ["not", "a", "key"], "name": "x"}
        with pytest.raises(HttpBadRequestError) as caught:
            client.insert_many(good)
        e = caught.value
        assert (e.status, e.field, e.index) == (400, "category", 1100)  # counted from the start of the input
        assert [op.count for op in e.accepted] == [1000]

        with pytest.raises(HttpBadRequestError) as caught:
            list(client.query({"price": 1}))  # no filter on an index key
        assert caught.value.status == 400 and caught.value.title == "Invalid request"

        with pytest.raises(HttpNotFoundError) as caught:
            client.operation("20260101T000000000000Z-00abcdef0123")
        assert caught.value.status == 404
        with pytest.raises(HttpNotFoundError):
            client.wait("not-an-operation")

        with pytest.raises(HttpTooLargeError) as caught:  # over Azure's 1 MiB entity limit
            client.insert({"sku": "E-big", "category": "Errors", "name": "big", "blob": "x" * 1_100_000})
        assert caught.value.status == 413 and caught.value.title == "Payload too large"
        # 415 (a body that is not application/json) cannot be sent by this client


def test_wait_on_a_failed_operation_raises_operation_failed_with_the_reason(fresh, storage_connection):
    """An entry the app cannot apply (written to the WAL past validation, as a bug or an older version
    could) goes through the poison trigger, which records the failure on the operation."""
    service = build_service(Settings.from_env(fresh.env))
    bad, _ = service.wal.new_operation_id()
    entities = service.wal.entry_entities(bad, [PendingEntry("put", b'{"sku": "no category"}')])
    service.wal.append([*entities, service.wal.header_entity(bad, 1, "put")])
    poison = QueueClient.from_connection_string(storage_connection, service.poison_queue.name)
    poison.send_message(base64.b64encode(json.dumps({"op": bad}).encode()).decode())

    with CatalogHttpClient(fresh.base) as client:
        with pytest.raises(OperationFailed) as caught:
            client.wait(bad, timeout=60)
        assert "missing required fields 'category', 'name'" in caught.value.reason
        assert caught.value.operation.id == bad and caught.value.operation.status == "failed"
        assert client.operation(bad).status == "failed"


# -- lost answers ---------------------------------------------------------------------------------------

def wal_rows(connection: str, table: str) -> list[dict]:
    """Every WAL entry and header (RowKeys starting with a digit: an op id's time) of the 16 shards."""
    wal = TableClient.from_connection_string(connection, table_name=table)
    rows = []
    for shard in range(16):
        for e in wal.query_entities("PartitionKey eq @pk", parameters={"pk": f"wal{shard:02d}"},
                                    select=["RowKey", "kind"]):
            if e["RowKey"][:1].isdigit():
                rows.append(e)
    return rows


class LoseFirstAnswers:
    """A proxy's drop rule: the answer to the first attempt of every `every`-th write is lost (a write
    is known by its Idempotency-Key; later attempts of it are answered)."""

    def __init__(self, every: int):
        self.every = every
        self.keys: list[str] = []

    def __call__(self, request: Request) -> bool:
        key = request.headers.get("idempotency-key")
        if request.method not in ("POST", "DELETE") or key is None or key in self.keys:
            return False
        self.keys.append(key)
        return (len(self.keys) - 1) % self.every == 0


def first_answers(proxy: FaultProxy) -> dict[str, str]:
    """Idempotency-Key -> the operation id the app gave that write's first attempt."""
    out: dict[str, str] = {}
    for e in proxy.exchanges:
        if e.method in ("POST", "DELETE"):
            out.setdefault(e.headers["idempotency-key"], e.json()["operation"])
    return out


def test_retries_after_lost_answers_write_each_record_once(fresh, storage_connection):
    """The proxy lets every POST and DELETE reach the app but loses the answer to the first attempt of
    every other one. The client retries each with the same Idempotency-Key: one operation and one
    WAL entry per record, and each call returns the operation its first (unanswered) attempt created."""
    lose = LoseFirstAnswers(every=2)
    proxy = FaultProxy(upstream(fresh), drop=lose)
    try:
        with CatalogHttpClient(proxy.base(), backoff=0.05) as client:
            singles = [client.insert(record(i)) for i in range(6)]
            bulk = client.insert_many(record(i) for i in range(6, 1106))
            for op in singles + bulk:
                assert client.wait(op, timeout=60).status == "applied"
            deleted = client.delete({"category": "c"}, row_to="item 00009")
            assert client.wait(deleted, timeout=60).status == "applied"
            assert client.count({"category": "c"}) == 1096
    finally:
        proxy.close()

    calls = singles + bulk + [deleted]
    assert len(calls) == 9 and [op.count for op in bulk] == [1000, 100] and deleted.count == 10
    assert len(proxy.dropped()) == 5 and {e.method for e in proxy.dropped()} == {"POST", "DELETE"}
    first = first_answers(proxy)
    assert [op.id for op in calls] == [first[k] for k in lose.keys]  # the first attempt's operation

    rows = wal_rows(storage_connection, fresh.table + "wal")
    entries = [r["RowKey"] for r in rows if r["kind"] in ("put", "del")]
    assert Counter(r["kind"] for r in rows if r["kind"] in ("put", "del")) == {"put": 1106, "del": 10}
    assert len(entries) == len(set(entries))
    assert {rk.rsplit("-", 1)[0] for rk in entries} == {op.id for op in calls}  # no second operation


def test_the_lost_answer_check_bites_when_the_app_never_sees_the_key(fresh, storage_connection):
    """The same lost answers, with the Idempotency-Key removed on its way to the app: each retry is a
    second operation, and the WAL count above shows it."""
    lose = LoseFirstAnswers(every=1)
    proxy = FaultProxy(upstream(fresh), drop=lose, strip=("Idempotency-Key",))
    try:
        with CatalogHttpClient(proxy.base(), backoff=0.05) as client:
            ops = [client.insert(record(i)) for i in range(2)]
    finally:
        proxy.close()
    lost = [e.json()["operation"] for e in proxy.dropped()]
    assert len(lost) == 2 and not set(lost) & {op.id for op in ops}
    entries = [r["RowKey"] for r in wal_rows(storage_connection, fresh.table + "wal") if r["kind"] == "put"]
    assert len(entries) == 4  # two records, written twice each
