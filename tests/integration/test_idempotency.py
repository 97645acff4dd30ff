"""Idempotency-Key on POST and DELETE /records, through the function app on Azurite: a repeat answers
the first answer and writes nothing, another request under the key is a 422, concurrent repeats make
one operation, a claim left by a dead writer is taken over, expired keys are collected."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import azure.functions as func
import pytest

from catalog.errors import RequestInFlightError, TransientStorageError
from catalog.idempotency import CLAIM, EXPIRY, KEY_TTL, STALE_AFTER, KeyedRequest, fingerprint
from catalog.wal import SHARDS, STAMP_END, shard_partition
from tests.helpers import FaultyStore
from tests.integration.test_function_app import queue_texts, svc


def post(functions, body, key=None, params=None, method="POST"):
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["idempotency-key"] = key
    name = "post_records" if method == "POST" else "delete_records"
    data = json.dumps(body).encode() if body is not None else b""
    req = func.HttpRequest(method=method, url="/api/records", headers=headers, params=params or {},
                           route_params={}, body=data)
    resp = functions[name].get_user_function()(req)
    return resp, json.loads(resp.get_body())


def wal_rows(service):
    """(WAL entries and headers, idempotency rows) over every shard."""
    entries, keys = 0, 0
    for s in range(SHARDS):
        for e in service.wal.store.query(service.wal.table, shard_partition(s)):
            if e["RowKey"] < STAMP_END:
                entries += 1
            else:
                keys += 1
    return entries, keys


def record(i, **extra):
    return {"sku": f"k{i}", "category": "c", "name": f"n{i}", **extra}


def test_a_repeat_answers_the_first_answer_and_writes_nothing(functions, app_env, storage_connection):
    service = svc(app_env)
    first, body = post(functions, record(1), key="order-1")
    assert first.status_code == 202
    written = wal_rows(service)
    messages = len(queue_texts(app_env, storage_connection))
    for _ in range(3):
        again, repeat = post(functions, record(1), key="order-1")
        assert again.status_code == 202 and repeat == body
        assert again.headers["Location"] == first.headers["Location"]
    assert wal_rows(service) == written == (1, 2)  # one WAL entity; the claim and its expiry row
    assert len(queue_texts(app_env, storage_connection)) == messages == 1
    # Bulk, and another key: its own operation.
    bulk, bulk_body = post(functions, [record(i) for i in range(2, 6)], key="order-2")
    assert bulk.status_code == 202 and bulk_body["operation"] != body["operation"]
    assert post(functions, [record(i) for i in range(2, 6)], key="order-2")[1] == bulk_body
    assert wal_rows(service) == (1 + 4 + 1, 4)


def test_the_same_key_with_another_request_is_a_422(functions, app_env):
    service = svc(app_env)
    post(functions, record(1), key="k")
    written = wal_rows(service)
    for other in (record(2), record(1, price=1)):
        resp, problem = post(functions, other, key="k")
        assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
        assert problem["field"] == "Idempotency-Key" and "another request" in problem["detail"]
    resp, problem = post(functions, None, key="k", params={"sku": "k1"}, method="DELETE")
    assert resp.status_code == 422
    assert wal_rows(service) == written


@pytest.mark.parametrize("key", ["", " lead", "trail ", "x" * 256, "naïve", "tab\there", "nl\n"])
def test_a_key_that_is_not_1_to_255_printable_ascii_is_a_400(functions, app_env, key):
    service = svc(app_env)
    resp, problem = post(functions, record(1), key=key)
    assert resp.status_code == 400 and problem["field"] == "Idempotency-Key"
    assert wal_rows(service) == (0, 0)


def test_concurrent_repeats_of_one_key_make_one_operation(functions, app_env):
    service = svc(app_env)
    barrier = threading.Barrier(8)

    def one(_):
        barrier.wait()
        return post(functions, [record(i) for i in range(3)], key="together")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert {resp.status_code for resp, _ in answers} == {202}
    assert len({body["operation"] for _, body in answers}) == 1
    assert wal_rows(service) == (3 + 1, 2)


def test_a_keyed_delete_repeats_its_answer_even_when_it_matched_nothing(functions, app_env):
    service = svc(app_env)
    service.submit([record(1), record(2)], apply_now=True)
    resp, body = post(functions, None, key="del-1", params={"category": "c"}, method="DELETE")
    assert resp.status_code == 202 and body["matched"] == 2
    assert post(functions, None, key="del-1", params={"category": "c"}, method="DELETE")[1] == body
    resp, nothing = post(functions, None, key="del-2", params={"sku": "none"}, method="DELETE")
    assert resp.status_code == 200 and nothing == {"operation": None, "status": "applied", "matched": 0}
    service.submit([record(3, sku="none")], apply_now=True)  # now it would match
    resp, again = post(functions, None, key="del-2", params={"sku": "none"}, method="DELETE")
    assert resp.status_code == 200 and again == nothing
    assert [r["name"] for r in service.query({"sku": "none"}).items] == ["n3"]  # the repeat deleted nothing


def test_a_failed_write_releases_the_key_so_a_retry_writes(functions, app_env):
    service = svc(app_env)
    real = service.wal.store
    service.wal.store = FaultyStore(real, service.wal.table, fail_on={2}, exc=TransientStorageError("gone"))
    try:
        with pytest.raises(TransientStorageError):  # the claim was write 1, the operation's transaction write 2
            service.submit([record(1)], idempotency=KeyedRequest("retry-me", "f"))
    finally:
        service.wal.store = real
    assert wal_rows(service) == (0, 1)  # no operation; the released claim's expiry row only
    accepted = service.submit([record(1)], idempotency=KeyedRequest("retry-me", "f"))
    assert accepted.operation and wal_rows(service) == (1, 3)


def claim_of(service, request: KeyedRequest):
    return service.wal.store.get(service.wal.table, shard_partition(request.shard), CLAIM + request.hash)


def test_a_repeat_waits_for_the_first_then_409_and_takes_over_a_dead_writers_claim(functions, app_env):
    service = svc(app_env)
    request = KeyedRequest("slow", fingerprint("POST", "records", {}, b"{}"))
    now = service.wal.clock()
    pk = shard_partition(request.shard)
    stuck = {"PartitionKey": pk, "RowKey": CLAIM + request.hash, "request": request.fingerprint,
             "operation": service.wal.new_operation_id(request.shard)[0], "answered": "pending", "count": 1,
             "created": now.isoformat(), "state": "writing"}
    service.wal.store.insert(service.wal.table, stuck)
    service.keys.in_flight_wait = 0.3
    try:
        with pytest.raises(RequestInFlightError):
            service.submit([record(1)], idempotency=request)
    finally:
        service.keys.in_flight_wait = 10.0
    assert wal_rows(service)[0] == 0
    # The writer died: once its claim is older than the WAL write deadline, a repeat takes it over.
    stale = dict(stuck, created=(now - STALE_AFTER - timedelta(seconds=1)).isoformat())
    service.wal.store.replace(service.wal.table, stale, claim_of(service, request).etag)
    accepted = service.submit([record(1)], idempotency=request)
    assert accepted.operation != stuck["operation"] and wal_rows(service)[0] == 1
    assert claim_of(service, request)["state"] == "done"
    assert service.submit([record(1)], idempotency=request).operation == accepted.operation


def test_the_http_answers_of_a_key_in_flight_and_a_taken_over_writer(functions, app_env):
    service = svc(app_env)
    body = json.dumps(record(1)).encode()
    request = KeyedRequest("http-slow", fingerprint("POST", "records", {}, body))
    service.wal.store.insert(service.wal.table, {
        "PartitionKey": shard_partition(request.shard), "RowKey": CLAIM + request.hash,
        "request": request.fingerprint, "operation": service.wal.new_operation_id(request.shard)[0],
        "answered": "pending", "count": 1, "created": service.wal.clock().isoformat(), "state": "writing"})
    service.keys.in_flight_wait = 0.2
    try:
        resp, problem = post(functions, record(1), key="http-slow")
    finally:
        service.keys.in_flight_wait = 10.0
    assert resp.status_code == 409 and resp.headers["Retry-After"] and "still being written" in problem["detail"]


def test_a_writer_whose_claim_was_taken_over_is_not_accepted_and_answers_the_others_operation(app_env):
    service = svc(app_env)
    request = KeyedRequest("raced", "f")
    real = service.wal.store
    taken = {}

    class TakeOverFirst:
        """Right before this writer's last transaction, another request takes its claim over."""

        def __getattr__(self, name):
            return getattr(real, name)

        def write_batch(self, table, creates, replaces, **kw):
            if replaces and replaces[0][0]["RowKey"].startswith(CLAIM) and not taken:
                held = real.get(table, replaces[0][0]["PartitionKey"], replaces[0][0]["RowKey"])
                other = dict(held, operation=service.wal.new_operation_id(request.shard)[0], state="done")
                real.replace(table, other, held.etag)
                taken["op"] = other["operation"]
            return real.write_batch(table, creates, replaces, **kw)

    service.wal.store = TakeOverFirst()
    try:
        accepted = service.submit([record(1)], idempotency=request)
    finally:
        service.wal.store = real
    assert accepted.operation == taken["op"]  # the answer of the request that holds the key
    assert wal_rows(service)[0] == 0  # and this writer's operation never landed


def test_expired_keys_are_collected_and_reusable(functions, app_env):
    service = svc(app_env)
    first = service.submit([record(1)], idempotency=KeyedRequest("old", "f1"))
    later = service.wal.clock() + KEY_TTL + timedelta(hours=2)
    assert service.keys.collect(service.wal.clock()) == 0  # nothing has expired yet
    assert wal_rows(service) == (1, 2)
    assert service.keys.collect(later) == 1
    assert wal_rows(service) == (1, 0)
    # Past its 24 hours a key is free again, even for another request.
    again = service.submit([record(2)], idempotency=KeyedRequest("old", "f2"))
    assert again.operation != first.operation


def test_an_expired_claim_not_yet_collected_does_not_bind_the_key(app_env):
    service = svc(app_env)
    request = KeyedRequest("stale-day", "f1")
    service.submit([record(1)], idempotency=request)
    held = claim_of(service, request)
    old = (service.wal.clock() - KEY_TTL - timedelta(minutes=1)).isoformat()
    service.wal.store.replace(service.wal.table, dict(held, created=old), held.etag)
    accepted = service.submit([record(2)], idempotency=KeyedRequest("stale-day", "f2"))
    assert accepted.operation != held["operation"] and wal_rows(service)[0] == 2
    expiry = [e for s in range(SHARDS) for e in service.wal.store.query(service.wal.table, shard_partition(s))
              if e["RowKey"].startswith(EXPIRY)]
    assert len(expiry) == 2  # the take-over wrote its own
