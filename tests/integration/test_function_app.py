"""Every route and trigger of function_app.py, called in-process as the Functions host calls them,
against a real Azurite: status codes, problem+json, nothing written on bad input, retries and poison."""
import base64
import json
from datetime import timedelta

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from catalog import api
from catalog.bootstrap import service_for
from catalog.wal import SHARDS, PendingEntry, shard_partition


def call(functions, name, method="GET", url="/api/x", *, params=None, body=None, route_params=None):
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    req = func.HttpRequest(method=method, url=url, headers={"content-type": "application/json"},
                           params=params or {}, route_params=route_params or {}, body=body or b"")
    resp = functions[name].get_user_function()(req)
    data = json.loads(resp.get_body()) if resp.get_body() else None
    return resp, data


def svc(app_env):
    import os
    return service_for(os.environ)


def wal_count(service):
    return sum(1 for s in range(SHARDS) for _ in service.wal.store.query(service.wal.table, shard_partition(s)))


def queue_texts(app_env, storage_connection, suffix=""):
    q = QueueClient.from_connection_string(storage_connection, f"{app_env['CATALOG_TABLE'].lower()}-wal{suffix}")
    return [base64.b64decode(m.content).decode() for m in q.peek_messages(max_messages=32)]


def deliver(functions, text, name="apply_wal_message"):
    functions[name].get_user_function()(func.QueueMessage(body=text.encode()))


def rec(i, **extra):
    return {"sku": f"s{i}", "category": "c", "name": f"n{i:03d}", **extra}


def test_post_then_queue_trigger_applies_and_status_goes_pending_to_applied(functions, app_env, storage_connection):
    resp, body = call(functions, "post_records", "POST", body=rec(1, price=2 ** 70))
    assert resp.status_code == 202 and body["status"] == "pending" and body["records"] == 1
    assert resp.headers["Location"] == f"/api/operations/{body['operation']}"
    op = body["operation"]
    _, status = call(functions, "get_operation", route_params={"id": op})
    assert status["status"] == "pending"
    texts = queue_texts(app_env, storage_connection)
    assert [json.loads(t)["op"] for t in texts] == [op]  # base64 on the wire, as the trigger expects
    deliver(functions, texts[0])
    _, status = call(functions, "get_operation", route_params={"id": op})
    assert status["status"] == "applied" and status["records"] == 1
    resp, page = call(functions, "get_records", params={"sku": "S1"})
    assert resp.status_code == 200 and page == {"items": [rec(1, price=2 ** 70)], "continuation": None}


@pytest.mark.parametrize("body", [[rec(i) for i in range(5)], {"records": [rec(i) for i in range(5)]}])
def test_bulk_post_forms(functions, app_env, storage_connection, body):
    resp, data = call(functions, "post_records", "POST", body=body)
    assert resp.status_code == 202 and data["records"] == 5
    header, entries = svc(app_env).wal.read_operation(data["operation"])
    assert header["count"] == 5 and len(entries) == 5


BAD_POSTS = [
    ("invalid JSON", b"{not json", 400, None),
    ("empty body", b"", 400, None),
    ("NaN", b'{"sku": NaN}', 400, None),
    ("not an object", b"42", 400, None),
    ("array of non-objects", b"[1, 2]", 400, None),
    ("missing index key", json.dumps({"sku": "s", "name": "n"}).encode(), 400, "category"),
    ("missing row key", json.dumps({"sku": "s", "category": "c"}).encode(), 400, "name"),
    ("structured key", json.dumps({"sku": ["s"], "category": "c", "name": "n"}).encode(), 400, "sku"),
    ("key value too long", json.dumps(rec(1, sku="x" * 600)).encode(), 400, "sku"),
    ("record too large", json.dumps(rec(1, blob="x" * 1_100_000)).encode(), 413, None),
    ("too many records", json.dumps([rec(i) for i in range(1001)]).encode(), 400, None),
    ("one bad record in a bulk", json.dumps([rec(1), {"sku": "x"}]).encode(), 400, "category"),
]


@pytest.mark.parametrize("what,body,status,field", BAD_POSTS, ids=[b[0] for b in BAD_POSTS])
def test_bad_posts_are_problems_and_write_nothing(functions, app_env, storage_connection, what, body, status, field):
    service = svc(app_env)
    before = wal_count(service)
    resp, problem = call(functions, "post_records", "POST", body=body)
    assert resp.status_code == status, problem
    assert resp.mimetype == "application/problem+json"
    assert problem["status"] == status and problem["detail"] and problem["title"]
    if field:
        assert problem["field"] == field and field in problem["detail"]
    assert wal_count(service) == before
    assert queue_texts(app_env, storage_connection) == []


BAD_QUERIES = [
    ("no filter", {}, "at least one filter"),
    ("only a field that is not an index key", {"colour": "red"}, "at least one filter must be on an index key"),
    ("row key is not an index key", {"name": "n"}, "at least one filter must be on an index key"),
    ("row_prefix with a range", {"sku": "a", "row_prefix": "n", "row_from": "a"}, "row_prefix cannot"),
    ("empty row_prefix", {"sku": "a", "row_prefix": ""}, "row_prefix must be"),
    ("empty fields", {"sku": "a", "fields": ""}, "fields is a comma-separated"),
    ("an empty name in fields", {"sku": "a", "fields": "a,,b"}, "fields is a comma-separated"),
    ("wait on a query", {"sku": "a", "wait": "1"}, "does not apply to a query"),
    ("limit zero", {"sku": "a", "limit": "0"}, "limit"),
    ("limit text", {"sku": "a", "limit": "ten"}, "limit"),
    ("limit too big", {"sku": "a", "limit": "5000"}, "limit"),
    ("bad continuation", {"sku": "a", "continuation": "!!!"}, "continuation"),
]


@pytest.mark.parametrize("what,params,match", BAD_QUERIES, ids=[q[0] for q in BAD_QUERIES])
def test_bad_queries_are_400_problems(functions, app_env, what, params, match):
    resp, problem = call(functions, "get_records", params=params)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert match in problem["detail"]


@pytest.mark.parametrize("params", [{}, {"colour": "x"}, {"sku": "a", "limit": "5"}])
def test_bad_deletes_are_400_and_write_nothing(functions, app_env, params):
    service = svc(app_env)
    before = wal_count(service)
    resp, problem = call(functions, "delete_records", "DELETE", params=params)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert wal_count(service) == before


def test_query_paging_range_and_quotes(functions, app_env):
    service = svc(app_env)
    service.submit([rec(i, category="O'Brien") for i in range(12)], apply_now=True)
    names, token = [], None
    while True:
        params = {"category": "o'brien", "row_from": "n002", "row_to": "n010", "limit": "4"}
        if token:
            params["continuation"] = token
        resp, page = call(functions, "get_records", params=params)
        assert resp.status_code == 200
        names += [r["name"] for r in page["items"]]
        token = page["continuation"]
        if not token:
            break
    assert names == [f"n{i:03d}" for i in range(2, 11)]


def test_delete_by_filter_counts_and_applies(functions, app_env, storage_connection):
    service = svc(app_env)
    service.submit([rec(i) for i in range(4)], apply_now=True)
    resp, body = call(functions, "delete_records", "DELETE", params={"category": "c", "row_to": "n001"})
    assert resp.status_code == 202 and body["matched"] == 2 and "Location" in resp.headers
    deliver(functions, queue_texts(app_env, storage_connection)[-1])
    _, page = call(functions, "get_records", params={"category": "c"})
    assert [r["name"] for r in page["items"]] == ["n002", "n003"]
    _, status = call(functions, "get_operation", route_params={"id": body["operation"]})
    assert status == {**status, "status": "applied", "action": "delete", "matched": 2}


@pytest.mark.parametrize("op_id", ["nope", "20260101T000000000000Z-01abcdefabcd"])
def test_unknown_operation_is_404(functions, app_env, op_id):
    resp, problem = call(functions, "get_operation", route_params={"id": op_id})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


def test_schema_and_health(functions, app_env):
    resp, schema = call(functions, "get_schema")
    assert resp.status_code == 200
    assert schema["index_keys"] == ["sku", "category"] and schema["row_key"] == "name"
    assert schema["case_sensitive"] is False
    call(functions, "post_records", "POST", body=rec(1))
    resp, health = call(functions, "get_health")
    assert resp.status_code == 200 and health["pending"] == 1 and len(health["shards"]) == SHARDS
    assert health["oldest_pending_age_seconds"] is not None


def test_enqueue_failure_still_202_and_the_timer_sweep_applies(functions, app_env, storage_connection):
    service = svc(app_env)
    QueueClient.from_connection_string(storage_connection, service.queue.name).delete_queue()
    resp, body = call(functions, "post_records", "POST", body=rec(7))
    assert resp.status_code == 202
    service.materializer.settle_window = timedelta(0)  # the test cannot wait out the real window
    functions["sweep_wal"].get_user_function()(TimerRequest(past_due=False))
    _, status = call(functions, "get_operation", route_params={"id": body["operation"]})
    assert status["status"] == "applied"
    assert call(functions, "get_records", params={"sku": "s7"})[1]["items"] == [rec(7)]


def log_corrupt_operation(service):
    op_id, _ = service.wal.new_operation_id()
    entities = service.wal.entry_entities(op_id, [PendingEntry("put", b'{"sku": "only"}')])
    service.wal.append([*entities, service.wal.header_entity(op_id, 1, "put")])
    return op_id


def test_unappliable_message_raises_for_retry_then_poison_marks_it_failed(functions, app_env):
    service = svc(app_env)
    bad = log_corrupt_operation(service)
    message = json.dumps({"op": bad})
    for _ in range(3):  # every delivery fails: the host retries, then moves it to the poison queue
        with pytest.raises(Exception, match="missing required field"):
            deliver(functions, message)
    _, status = call(functions, "get_operation", route_params={"id": bad})
    assert status["status"] == "pending" and "missing required field" in status["last_error"]
    call(functions, "post_records", "POST", body=rec(8))
    good = json.loads(queue_texts_for(service)[-1])["op"]
    deliver(functions, json.dumps({"op": good}))  # other messages keep flowing
    deliver(functions, message, "fail_poison_message")
    _, status = call(functions, "get_operation", route_params={"id": bad})
    assert status["status"] == "failed" and "missing required fields 'category', 'name'" in status["error"]
    _, health = call(functions, "get_health")
    assert health["failed_operations"] == 1 and health["latest_failures"][0]["operation"] == bad
    assert call(functions, "get_records", params={"sku": "s8"})[1]["items"] == [rec(8)]


def queue_texts_for(service):
    client = service.queue._client
    return [base64.b64decode(m.content).decode() for m in client.peek_messages(max_messages=32)]


def test_duplicate_and_reordered_messages_leave_the_same_index(functions, app_env, storage_connection):
    call(functions, "post_records", "POST", body=rec(1, v=1))
    call(functions, "post_records", "POST", body=rec(1, v=2))
    call(functions, "post_records", "POST", body=rec(2, v=1))
    first, second, third = queue_texts(app_env, storage_connection)
    for text in (second, first, first, third, second, third):
        deliver(functions, text)
    assert call(functions, "get_records", params={"category": "c"})[1]["items"] == [rec(1, v=2), rec(2, v=1)]


def test_recover_route_replays(functions, app_env):
    service = svc(app_env)
    service.submit([rec(i) for i in range(3)], apply_now=True)
    resp, result = call(functions, "post_recover", "POST", params={"since": "2000-01-01T00:00:00Z"})
    assert resp.status_code == 200 and result["entries"] == 3 and result["failed"] == 0
    resp, problem = call(functions, "post_recover", "POST", params={"since": "yesterday"})
    assert resp.status_code == 400


def test_routes_and_openapi_description_are_the_same_set(functions, app_env):
    registered = set()
    for fn in functions.values():
        trigger = fn.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            for method in trigger.methods:
                registered.add((trigger.route, str(getattr(method, "value", method)).upper()))
    assert registered == set(api.ROUTES)
    resp, spec = call(functions, "get_openapi")
    assert resp.status_code == 200
    described = {(path.lstrip("/"), method.upper()) for path, ops in spec["paths"].items() for method in ops}
    assert described == registered
    names = {fn.get_function_name() for fn in functions.values()}
    assert {op["operationId"] for ops in spec["paths"].values() for op in ops.values()} <= names
    assert not any(route.lower().startswith(("admin", "runtime")) for route, _ in registered)


def test_the_openapi_document_validates_and_declares_the_key_each_route_needs(functions, app_env):
    from openapi_spec_validator import validate

    _, spec = call(functions, "get_openapi")
    validate(spec)  # raises on anything OpenAPI 3.0 does not allow
    schemes = spec["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "x-functions-key"), ("query", "code")}
    levels = {}
    for fn in functions.values():
        trigger = fn.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            levels[trigger.route] = str(getattr(trigger.auth_level, "value", trigger.auth_level)).lower()
    for path, ops in spec["paths"].items():
        level = levels[path.lstrip("/")]
        for op in ops.values():
            needs = {name for requirement in op["security"] for name in requirement}
            expected = {"anonymous": set(), "function": {"functionKeyHeader", "functionKeyQuery"},
                        "admin": {"adminKeyHeader", "adminKeyQuery"}}[level]
            assert needs == expected, (path, level)
    post = spec["paths"]["/records"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in post["parameters"])
    assert {"409", "422"} <= set(post["responses"])


def test_trigger_bindings_use_the_settings(functions, app_env):
    triggers = {name: fn.get_trigger() for name, fn in functions.items()}
    assert triggers["apply_wal_message"].queue_name == "%CATALOG_QUEUE%"
    assert triggers["fail_poison_message"].queue_name == "%CATALOG_QUEUE%-poison"
    assert triggers["sweep_wal"].schedule == "%CATALOG_SWEEP_SCHEDULE%"
    auth = {name: str(getattr(t, "auth_level", "")) for name, t in triggers.items() if hasattr(t, "auth_level")}
    assert "ADMIN" in auth["post_recover"].upper() and "FUNCTION" in auth["post_records"].upper()


def test_throttled_wal_write_is_a_503_problem_and_nothing_is_half_done(functions, app_env, storage_connection):
    from catalog.errors import TransientStorageError
    from tests.helpers import FaultyStore

    service = svc(app_env)
    real = service.wal.store
    service.wal.store = FaultyStore(real, service.wal.table, fail_on={1},
                                    exc=TransientStorageError("storage answered 503 ServerBusy"))
    try:
        resp, problem = call(functions, "post_records", "POST", body=rec(1))
    finally:
        service.wal.store = real
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.mimetype == "application/problem+json" and "retry" in problem["detail"]
    assert "ServerBusy" not in problem["detail"] and problem["error_id"] in problem["detail"]
    assert wal_count(service) == 0 and queue_texts(app_env, storage_connection) == []
    resp, body = call(functions, "post_records", "POST", body=rec(1))  # the client's retry
    assert resp.status_code == 202


def test_crash_between_bulk_transactions_loses_nothing_that_was_logged(functions, app_env, storage_connection):
    from tests.helpers import FaultyStore

    service = svc(app_env)
    real = service.wal.store
    service.wal.store = FaultyStore(real, service.wal.table, fail_on={2})  # the 2nd transaction dies
    try:
        resp, problem = call(functions, "post_records", "POST", body=[rec(i) for i in range(150)])
    finally:
        service.wal.store = real
    assert resp.status_code == 500 and resp.mimetype == "application/problem+json"
    assert wal_count(service) == 100  # the first transaction landed, without its header
    assert queue_texts(app_env, storage_connection) == []
    service.materializer.settle_window = timedelta(0)
    functions["sweep_wal"].get_user_function()(TimerRequest(past_due=False))
    assert len(service.query({"category": "c"}, limit=1000).items) == 100  # what was logged is applied
    resp, body = call(functions, "post_records", "POST", body=[rec(i) for i in range(150)])  # the retry
    assert resp.status_code == 202
    deliver(functions, queue_texts(app_env, storage_connection)[-1])
    assert len(service.query({"category": "c"}, limit=1000).items) == 150  # replaced, not duplicated


def test_the_sdks_per_request_logs_stay_out_of_the_function_logs(functions, app_env, storage_connection, caplog):
    import logging

    caplog.set_level(logging.INFO)  # what the worker forwards at host.json's Information
    resp, _ = call(functions, "post_records", "POST", body=rec(1))
    assert resp.status_code == 202
    sdk = [r for r in caplog.records if r.name.startswith("azure.core.pipeline.policies.http_logging_policy")]
    assert sdk == [] and any(r.name.startswith("catalog") for r in caplog.records)
