"""Hostile input through the function app (in-process, on Azurite): every bad request is a clean 4xx
problem and writes nothing; 5xx bodies never carry storage details; a record stored before lone
surrogates were refused still reads, exports and deletes; duplicated queue deliveries cannot
hold other operations' status marks back."""
from __future__ import annotations

import base64
import io
import json
import os
import threading

import azure.functions as func
import pytest

from catalog import codec
from catalog.batching import MARK_DELAY
from catalog.bootstrap import service_for
from catalog.errors import StorageError, TransientStorageError
from catalog.keys import record_keys
from catalog.tools.transfer import export_records
from catalog.wal import APPLIED, PendingEntry, shard_partition
from tests.helpers import FaultyStore, wait_until
from tests.hostile import CASES, FUNCTION_FOR, JSON, Hostile, StorageCounts, check_problem


def call(functions, name, method, *, params=None, body=b"", headers=None, route_params=None):
    req = func.HttpRequest(method=method, url="http://localhost/api/x", headers=headers or {},
                           params=params or {}, route_params=route_params or {}, body=body)
    resp = functions[name].get_user_function()(req)
    raw = resp.get_body()
    raw.decode("utf-8")  # every answer is UTF-8
    return resp, (json.loads(raw) if raw else None)


def post(functions, body, headers=JSON):
    return call(functions, "post_records", "POST", body=json.dumps(body).encode(), headers=headers)


@pytest.fixture
def counts(app_env, storage_connection, functions):
    post(functions, {"sku": "a", "category": "c", "name": "seed"})  # something to page, delete and count
    service_for(os.environ).apply_message(queue_texts(app_env, storage_connection)[0])
    queue(app_env, storage_connection).clear_messages()
    return StorageCounts(storage_connection, app_env["CATALOG_TABLE"], app_env["CATALOG_TABLE"].lower() + "-wal")


def queue(app_env, storage_connection):
    from azure.storage.queue import QueueClient

    return QueueClient.from_connection_string(storage_connection, app_env["CATALOG_TABLE"].lower() + "-wal")


def queue_texts(app_env, storage_connection):
    return [base64.b64decode(m.content).decode() for m in
            queue(app_env, storage_connection).peek_messages(max_messages=32)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_request_is_a_clean_4xx_and_writes_nothing(functions, counts, case: Hostile):
    before = counts()
    resp, problem = call(functions, FUNCTION_FOR[(case.method, case.route)], case.method, params=case.params,
                         body=case.body, headers=case.headers)
    check_problem(case, resp.status_code, resp.mimetype, problem)
    assert counts() == before


def test_a_delete_that_matches_nothing_writes_nothing_and_says_so(functions, counts):
    before = counts()
    resp, body = call(functions, "delete_records", "DELETE", params={"sku": "nothing-here"})
    assert resp.status_code == 200 and body == {"operation": None, "status": "applied", "matched": 0}
    assert "Location" not in resp.headers and counts() == before


def test_an_operation_id_with_a_trailing_newline_is_not_an_operation(functions, counts):
    resp, body = call(functions, "post_records", "POST", body=b'{"sku":"x","category":"c","name":"n"}', headers=JSON)
    resp, problem = call(functions, "get_operation", "GET", route_params={"id": body["operation"] + "\n"})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


# -- 5xx bodies carry no storage detail ------------------------------------------------------------
def leaks(problem: dict, service, connection: str) -> list[str]:
    text = json.dumps(problem)
    account = "devstoreaccount1"
    endpoint = connection.split("TableEndpoint=")[1].split(";")[0].split("//")[1].split("/")[0]
    names = [service.index.table, service.wal.table, service.queue.name, account, endpoint, "Traceback",
             "ServerBusy", "AuthenticationFailed"]
    return [n for n in names if n.lower() in text.lower()]


@pytest.mark.parametrize("error, status", [
    (TransientStorageError("query {t}: storage unreachable: <urllib3 ... host='{e}'> ServerBusy"), 503),
    (StorageError("insert into {t}: storage answered 403 AuthenticationFailed: devstoreaccount1 {e}"), 502),
])
def test_storage_failures_are_problems_without_storage_details(functions, app_env, storage_connection, caplog,
                                                               error, status):
    service = service_for(os.environ)
    endpoint = storage_connection.split("TableEndpoint=")[1].split(";")[0]
    error = type(error)(str(error).format(t=service.wal.table, e=endpoint))
    real = service.wal.store
    service.wal.store = FaultyStore(real, service.wal.table, fail_on=set(range(1, 10)), exc=error)
    try:
        with caplog.at_level("ERROR", logger="function_app"):
            resp, problem = post(functions, {"sku": "a", "category": "c", "name": "n"})
    finally:
        service.wal.store = real
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    assert leaks(problem, service, storage_connection) == [], problem
    assert problem["error_id"] in problem["detail"]
    logged = [r for r in caplog.records if problem["error_id"] in r.getMessage()]
    assert logged and service.wal.table in logged[0].getMessage()  # the detail went to the log instead


def test_a_storage_outage_is_a_503_without_the_endpoint(app_env, monkeypatch, functions):
    from devhost.azurite import free_port

    port = free_port()  # nothing listens there
    dead = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    resp, problem = call(functions, "get_records", "GET", params={"sku": "a"})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    text = json.dumps(problem)
    assert str(port) not in text and "127.0.0.1" not in text and app_env["CATALOG_TABLE"] not in text


# -- what is accepted never breaks a read, a message or an export ---------------------------------
def test_concurrent_posts_with_one_refused_record_lose_no_other_message(functions, app_env, storage_connection):
    bad = b'{"sku": "bad", "category": "c", "name": "n", "t": "\\ud800"}'
    results: list = []

    def send(i):
        body = bad if i == 3 else json.dumps({"sku": f"g{i}", "category": "grp", "name": f"n{i}"}).encode()
        results.append(call(functions, "post_records", "POST", body=body, headers=JSON)[0].status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [202] * 7 + [400]
    for text in queue_texts(app_env, storage_connection):
        service_for(os.environ).apply_message(text)
    _, page = call(functions, "get_records", "GET", params={"category": "grp"})
    assert sorted(r["sku"] for r in page["items"]) == [f"g{i}" for i in range(8) if i != 3]


def plant_legacy_record(service, record: dict) -> str:
    """A record holding a lone surrogate, as the write path accepted before they were refused."""
    op_id, shard = service.wal.new_operation_id()
    entity = service.wal.single_entity(op_id, PendingEntry("put", codec.dumps_stored(record)))
    service.wal.append([entity])
    service.materializer.apply_entries(op_id, [service.wal.entry(shard, entity)], entity)
    return op_id


def test_a_record_stored_with_a_lone_surrogate_still_reads_exports_and_deletes(functions, app_env,
                                                                               storage_connection):
    service = service_for(os.environ)
    legacy = {"sku": "old\ud800", "category": "legacy", "name": "n\udfff", "note": "\ud83d"}
    plant_legacy_record(service, legacy)
    resp, page = call(functions, "get_records", "GET", params={"category": "legacy"})
    assert resp.status_code == 200 and page["items"] == [legacy]  # served as \ud800 escapes
    out = io.BytesIO()
    assert export_records(service, out) == 1
    assert json.loads(out.getvalue().decode("utf-8")) == legacy
    resp, body = call(functions, "delete_records", "DELETE", params={"category": "legacy"})
    assert resp.status_code == 202 and body["matched"] == 1
    [text] = queue_texts(app_env, storage_connection)  # its message could be encoded
    service.apply_message(text)
    _, page = call(functions, "get_records", "GET", params={"category": "legacy"})
    assert page["items"] == []
    assert record_keys(service.schema, legacy).row_key.startswith("n~udfff ")


# -- duplicated deliveries and status marks ---------------------------------------------------------
def test_duplicated_deliveries_of_one_record_operations_all_reach_applied_within_the_bound(
        functions, app_env, storage_connection):
    service = service_for(os.environ)
    service.shard = 5  # every operation in one shard, so their marks share one transaction
    try:
        ops, texts = [], []
        for i in range(30):  # one message each; a peek shows at most 32
            _, body = post(functions, {"sku": f"d{i}", "category": "dup", "name": f"n{i}"})
            ops.append(body["operation"])
        texts = queue_texts(app_env, storage_connection)
        assert len(texts) == len(ops)
    finally:
        service.shard = None
    for text in texts + texts + texts[:5]:  # every message twice, some three times
        functions["apply_wal_message"].get_user_function()(func.QueueMessage(body=text.encode()))

    def stored_statuses():
        return {e["RowKey"].rsplit("-", 1)[0]: e.get("status") for e in
                service.wal.store.query(service.wal.table, shard_partition(5))}

    wait_until(lambda: all(stored_statuses().get(op) == APPLIED for op in ops),
               timeout=MARK_DELAY.total_seconds() + 5, what="every stored status to read applied")
    assert service.marks.unwritten == 0
    _, health = call(functions, "get_health", "GET")
    assert health["status_marks_unwritten"] == 0 and health["pending"] == 0


def test_a_refused_mark_batch_is_written_in_halves_and_only_the_unwritable_mark_is_counted(app_env):
    service = service_for(os.environ)
    shard = 7
    ops = []
    for i in range(10):
        op_id, _ = service.wal.new_operation_id(shard)
        service.wal.append([service.wal.single_entity(op_id, PendingEntry("put", b'{"i":%d}' % i))])
        ops.append(op_id)
    poisoned = f"{ops[4]}-00000"

    class RefusingStore(FaultyStore):
        """Refuses any batch or merge that holds one chosen mark, as storage refuses a bad entity."""

        def merge_batch(self, table, entities):
            if any(e["RowKey"] == poisoned for e in entities):
                raise StorageError("batch refused")
            return self.inner.merge_batch(table, entities)

        def merge(self, table, entity):
            if entity["RowKey"] == poisoned:
                raise StorageError("entity refused")
            return self.inner.merge(table, entity)

    real = service.wal.store
    service.wal.store = RefusingStore(real, service.wal.table)
    try:
        for op_id in ops:
            service.marks.add(service.wal.mark_entity(op_id, f"{op_id}-00000", APPLIED))
        service.marks.flush()
    finally:
        service.wal.store = real
    statuses = {e["RowKey"]: e["status"] for e in real.query(service.wal.table, shard_partition(shard))}
    assert [statuses[f"{op}-00000"] for op in ops] == [APPLIED] * 4 + ["pending"] + [APPLIED] * 5
    assert service.marks.unwritten == 1
