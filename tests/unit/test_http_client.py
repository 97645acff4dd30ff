"""CatalogHttpClient without a catalog: a scripted local HTTP server answers what each test needs (503s,
problems, pages), and records what the client sent (headers, query, body), so the retry rules, the
Idempotency-Key, the bulk split, paging and waiting are checked exactly and fast."""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from catalog import (
    CatalogHttpClient,
    CatalogHttpError,
    Change,
    HttpBadRequestError,
    HttpConflictError,
    HttpNotFoundError,
    HttpTooLargeError,
    HttpUnavailableError,
    Operation,
    OperationFailed,
    OperationTimeoutError,
)
from catalog.remote import wire
from catalog.remote.backoff import Backoff, retry_after_seconds

OP = "20260101T000000000000Z-03abcdef0123"


@dataclass
class Seen:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self):
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], object]  # status, headers, JSON body (or bytes)


class ScriptedServer:
    """A local HTTP/1.1 server: `respond(seen)` gives each answer; every request is kept in `seen`."""

    def __init__(self, respond: Callable[[Seen], Answer]):
        self.respond = respond
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, url.path, parse_qsl(url.query, keep_blank_values=True),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                outer.seen.append(seen)
                status, headers, payload = outer.respond(seen)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                kind = "application/problem+json" if status >= 400 else "application/json"
                for name, value in {"Content-Type": kind, **headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = handle_one

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[ScriptedServer] = []

    def start(respond: Callable[[Seen], Answer]) -> ScriptedServer:
        servers.append(ScriptedServer(respond))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def script(*answers: Answer) -> Callable[[Seen], Answer]:
    """Answers in order; the last one repeats."""
    queue = list(answers)
    return lambda seen: queue.pop(0) if len(queue) > 1 else queue[0]


def problem(status: int, title: str, detail: str, **extra) -> dict:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


BUSY: Answer = (503, {"Retry-After": "0"}, problem(503, "Storage busy", "retry (error id e1)", error_id="e1"))
ACCEPTED: Answer = (202, {"Location": f"/api/operations/{OP}"}, {"operation": OP, "status": "pending", "records": 1})
RECORD = {"sku": "A-1", "category": "Tools", "name": "hammer"}


def client(base: str, **kwargs) -> CatalogHttpClient:
    return CatalogHttpClient(base, **{"backoff": 0.001, "max_backoff": 0.01, **kwargs})


# -- retries and the Idempotency-Key ------------------------------------------------------------------

def test_a_busy_write_is_retried_with_one_idempotency_key_until_accepted(serve):
    server = serve(script(BUSY, BUSY, ACCEPTED))
    with client(server.base) as c:
        op = c.insert(RECORD)
        assert op == Operation(id=OP, status="pending", action="insert", count=1)
        keys = {s.headers["idempotency-key"] for s in server.seen}
        assert len(server.seen) == 3 and len(keys) == 1 and len(keys.pop()) >= 16
        assert {s.body for s in server.seen} == {json.dumps(RECORD, separators=(",", ":")).encode()}
        assert all(s.headers["content-type"] == "application/json" for s in server.seen)

        c.insert(RECORD)  # another call, another key
        c.delete({"sku": "A-1"})
    keys = [s.headers["idempotency-key"] for s in server.seen]
    assert len(set(keys)) == 3 and server.seen[-1].method == "DELETE"


def test_retry_after_is_honoured(serve):
    server = serve(script((503, {"Retry-After": "1"}, problem(503, "Storage busy", "retry")), ACCEPTED))
    with client(server.base) as c:
        c.insert(RECORD)
    assert len(server.seen) == 2
    assert server.seen[1].at - server.seen[0].at >= 0.95  # back-off alone would be ~1 ms


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_busy_answers_are_retried_then_raise_unavailable_with_the_problem(serve, status):
    server = serve(script((status, {"Retry-After": "0"},
                           problem(status, "Storage busy", "try later (error id e9)", error_id="e9"))))
    with client(server.base, retries=3) as c, pytest.raises(HttpUnavailableError) as caught:
        c.count({"sku": "A-1"})
    assert len(server.seen) == 4  # the first attempt and 3 retries
    e = caught.value
    assert (e.status, e.title, e.detail, e.error_id) == (status, "Storage busy", "try later (error id e9)", "e9")


def test_a_keyed_write_retries_409_but_a_read_does_not(serve):
    in_flight = (409, {"Retry-After": "0"}, problem(409, "Conflict", "the first request is still being written"))
    server = serve(script(in_flight, ACCEPTED))
    with client(server.base) as c:
        assert c.insert(RECORD).id == OP
        assert len(server.seen) == 2 and server.seen[0].headers["idempotency-key"] == server.seen[1].headers[
            "idempotency-key"]
    server = serve(script(in_flight))
    with client(server.base) as c, pytest.raises(HttpConflictError) as caught:
        c.operation(OP)
    assert len(server.seen) == 1 and caught.value.status == 409


@pytest.mark.parametrize(("status", "error"), [
    (400, HttpBadRequestError), (415, HttpBadRequestError), (422, HttpBadRequestError), (404, HttpNotFoundError),
    (413, HttpTooLargeError), (500, HttpUnavailableError), (401, CatalogHttpError)])
def test_other_errors_are_not_retried_and_carry_the_problem(serve, status, error):
    server = serve(script((status, {}, problem(status, "Invalid request", "record 3: missing 'name'",
                                               field="name", index=3))))
    with client(server.base) as c, pytest.raises(error) as caught:
        c.insert_many([RECORD] * 5)
    assert len(server.seen) == 1
    e = caught.value
    assert type(e) is error
    assert (e.status, e.title, e.detail, e.field, e.index) == (status, "Invalid request", "record 3: missing 'name'",
                                                                "name", 3)
    assert e.problem["type"] == "about:blank" and e.accepted == ()
    assert f"{status} Invalid request: record 3: missing 'name'" in str(e)


def test_an_answer_that_is_not_a_problem_still_says_what_came_back(serve):
    server = serve(script((502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")))
    with client(server.base, retries=0) as c, pytest.raises(HttpUnavailableError) as caught:
        c.health()
    assert caught.value.status == 502 and caught.value.detail == "<html>Bad Gateway</html>"
    assert caught.value.field is None and caught.value.problem == {}


class ClosingListener:
    """Accepts each connection and closes it at once, counting them: a host that never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.recv(65536)
            conn.close()


def test_no_answer_is_retried_then_unavailable_with_the_connection_error_as_cause():
    listener = ClosingListener()
    try:
        with client(listener.base, retries=2) as c, pytest.raises(HttpUnavailableError) as caught:
            c.insert(RECORD)
        assert listener.connections == 3
        assert caught.value.status is None and isinstance(caught.value.__cause__, requests.ConnectionError)
        assert "no answer after 3 attempts" in str(caught.value)
    finally:
        listener.sock.close()


def test_a_closed_port_is_unavailable_after_the_retries():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    c = client(f"http://127.0.0.1:{port}/api", retries=2)
    sleeps: list[float] = []
    c._sleep = sleeps.append  # count the back-offs without waiting them out
    with pytest.raises(HttpUnavailableError):
        c.schema()
    assert len(sleeps) == 2


def test_a_slow_answer_times_out_and_is_retried(serve):
    calls = itertools.count()

    def slow_first(seen):
        if next(calls) == 0:
            time.sleep(1.0)
        return ACCEPTED
    server = serve(slow_first)
    with client(server.base, timeout=0.3) as c:
        assert c.insert(RECORD).id == OP
    assert len(server.seen) == 2
    assert server.seen[0].headers["idempotency-key"] == server.seen[1].headers["idempotency-key"]


def test_backoff_grows_with_jitter_and_never_undercuts_retry_after():
    b = Backoff(base=0.5, cap=8.0)
    for attempt in range(7):
        ceiling = min(8.0, 0.5 * 2 ** attempt)
        samples = [b.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in samples)
        assert len(set(samples)) > 100  # jittered, not one fixed value
    assert b.delay(0, retry_after=5.0) >= 5.0 and b.delay(6, retry_after=1.0) >= 4.0
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None and retry_after_seconds("99999") == 300.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), lambda: now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), lambda: now) == 0.0


def test_the_function_key_is_sent_as_a_header_and_never_shown(serve):
    server = serve(script((200, {}, {"status": "ok"})))
    with client(server.base, key="s3cret") as c:
        assert c.health() == {"status": "ok"}
        assert "s3cret" not in repr(c)
    assert server.seen[0].headers["x-functions-key"] == "s3cret"
    assert "code" not in dict(server.seen[0].params)


# -- bulk writes ----------------------------------------------------------------------------------------

def test_insert_many_streams_any_iterable_in_requests_of_at_most_1000(serve):
    pulled = itertools.count()
    produced = [0]
    pulled_at_request: list[int] = []

    def records():
        for i in range(2500):
            produced[0] = next(pulled) + 1
            yield {"sku": f"S{i}", "category": "c", "name": f"n{i:04d}", "flag": i % 2 == 0}

    def accept(seen):
        pulled_at_request.append(produced[0])
        n = len(seen.json())
        return 202, {}, {"operation": f"{OP[:-1]}{len(pulled_at_request)}", "status": "pending", "records": n}
    server = serve(accept)
    with client(server.base) as c:
        ops = c.insert_many(records())
    assert [op.count for op in ops] == [1000, 1000, 500]
    assert [op.id[-1] for op in ops] == ["1", "2", "3"]
    # one request's records (and the next record) in memory, not the iterable
    assert pulled_at_request == [1001, 2001, 2500]
    sent = [r for s in server.seen for r in s.json()]
    assert [r["sku"] for r in sent] == [f"S{i}" for i in range(2500)]
    assert len({s.headers["idempotency-key"] for s in server.seen}) == 3


def test_bodies_are_cut_at_16_mib_and_filled_greedily():
    big = [{"sku": f"S{i}", "category": "c", "name": "n", "blob": "x" * 900_000} for i in range(40)]
    bodies = list(wire.bulk_bodies(big))
    assert [(first, n) for _, first, n in bodies] == [(0, 18), (18, 18), (36, 4)]
    for body, first, n in bodies:
        assert len(body) <= wire.MAX_BODY_BYTES and json.loads(body) == big[first:first + n]
    one_more = len(bodies[0][0]) + 1 + len(wire.record_json(big[18]))
    assert one_more > wire.MAX_BODY_BYTES  # the first body took all that fits


def test_a_record_too_large_for_any_body_is_refused_before_it_is_sent(serve):
    server = serve(lambda seen: (202, {}, {"operation": OP, "status": "pending", "records": len(seen.json())}))
    huge = {"sku": "H", "category": "c", "name": "n", "blob": "x" * wire.MAX_BODY_BYTES}
    with client(server.base) as c:
        with pytest.raises(HttpTooLargeError) as caught:
            c.insert_many([RECORD] * 1500 + [huge])
        assert caught.value.index == 1500 and caught.value.status == 413
        assert [op.count for op in caught.value.accepted] == [1000]  # the 500 before it were not sent
        with pytest.raises(HttpTooLargeError):
            c.insert(huge)
    assert len(server.seen) == 1


def test_a_refused_request_names_the_record_by_its_place_in_the_whole_iterable(serve):
    server = serve(script(ACCEPTED, (400, {}, problem(400, "Invalid request", "record 7: missing 'name'",
                                                      field="name", index=7))))
    with client(server.base) as c, pytest.raises(HttpBadRequestError) as caught:
        c.insert_many(dict(RECORD, sku=f"S{i}") for i in range(1500))
    assert caught.value.index == 1007 and caught.value.field == "name"
    assert [op.id for op in caught.value.accepted] == [OP]


def test_a_refused_one_record_request_still_names_the_record(serve):
    """The API gives no index for a request of one record; insert_many knows which record it was."""
    server = serve(script(ACCEPTED, (400, {}, problem(400, "Invalid request", "missing 'name'", field="name"))))
    with client(server.base) as c, pytest.raises(HttpBadRequestError) as caught:
        c.insert_many([RECORD] * 1001)
    assert caught.value.index == 1000 and len(server.seen[1].json()) == 1


def test_a_record_shaped_like_the_bulk_envelope_is_sent_as_one_record(serve):
    server = serve(script(ACCEPTED))
    with client(server.base) as c:
        c.insert({"records": [1, 2]})
        c.insert(RECORD)
    assert server.seen[0].json() == [{"records": [1, 2]}] and server.seen[1].json() == RECORD


# -- reads ----------------------------------------------------------------------------------------------

def test_query_follows_continuations_and_sends_values_as_json_text(serve):
    pages = {None: {"items": [{"n": 1}, {"n": 2}], "continuation": "tok 1"},
             "tok 1": {"items": [{"n": 3}], "continuation": None}}
    server = serve(lambda seen: (200, {}, pages[dict(seen.params).get("continuation")]))
    with client(server.base) as c:
        items = c.query({"category": "Tools", "active": True, "price": 12.5, "qty": 3}, row_prefix="ha",
                        fields=["name", "price"], limit=2)
        assert server.seen == []  # nothing is read until the iterator is
        assert [r["n"] for r in items] == [1, 2, 3]
    assert server.seen[0].params == [("category", "Tools"), ("active", "true"), ("price", "12.5"), ("qty", "3"),
                                     ("row_prefix", "ha"), ("fields", "name,price"), ("limit", "2")]
    assert server.seen[1].params[-1] == ("continuation", "tok 1") and server.seen[1].path == "/api/records"


def test_filters_the_api_would_misread_are_refused_before_sending(serve):
    server = serve(script((200, {}, {"count": 0})))
    with client(server.base) as c:
        with pytest.raises(ValueError, match="reserved"):
            c.query({"limit": 5, "sku": "a"})
        with pytest.raises(TypeError):
            c.count({"sku": None})
        with pytest.raises(ValueError, match="comma"):
            c.query({"sku": "a"}, fields=["a,b"])
        assert c.count({"sku": "a"}, row_from="a", row_to="b") == 0
    assert len(server.seen) == 1 and server.seen[0].params == [("sku", "a"), ("row_from", "a"), ("row_to", "b")]


def test_delete_that_matched_nothing_is_an_applied_operation_without_an_id(serve):
    server = serve(script((200, {}, {"operation": None, "status": "applied", "matched": 0})))
    with client(server.base) as c:
        op = c.delete({"category": "none"}, row_prefix="x")
        assert op == Operation(id=None, status="applied", action="delete", count=0) and op.done
        assert c.wait(op) is op  # nothing to wait for: no request
    assert len(server.seen) == 1 and server.seen[0].method == "DELETE"


# -- waiting ----------------------------------------------------------------------------------------------

def status_body(status: str, **extra) -> dict:
    return {"operation": OP, "status": status, "action": "insert", "records": 2,
            "accepted": "2026-01-01T00:00:00+00:00", **extra}


def test_wait_long_polls_until_applied(serve):
    server = serve(script((200, {}, status_body("pending")), (200, {}, status_body("pending")),
                          (200, {}, status_body("applied", finished="2026-01-01T00:00:01.500000+00:00"))))
    with client(server.base) as c:
        op = c.wait(Operation(id=OP, status="pending", action="insert", count=2), timeout=120)
    assert op.status == "applied" and op.finished == datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert op.accepted == datetime(2026, 1, 1, tzinfo=UTC) and op.count == 2
    assert [dict(s.params)["wait"] for s in server.seen] == ["60", "60", "60"]
    assert server.seen[0].path == f"/api/operations/{OP}"


def test_wait_raises_operation_failed_with_the_reason(serve):
    server = serve(script((200, {}, status_body("failed", error="record 1: missing 'name'", failed=1))))
    with client(server.base) as c, pytest.raises(OperationFailed) as caught:
        c.wait(OP)
    assert caught.value.reason == "record 1: missing 'name'" and caught.value.operation.failed_entries == 1
    assert "missing 'name'" in str(caught.value)


def test_wait_gives_up_with_a_timeout_error_carrying_the_last_status(serve):
    def held(seen):
        time.sleep(int(dict(seen.params)["wait"]))  # as the server does: holds the request `wait` s
        return 200, {}, status_body("pending", last_error="storage busy")
    server = serve(held)
    started = time.monotonic()
    with client(server.base) as c, pytest.raises(TimeoutError) as caught:
        c.wait(OP, timeout=0.5)
    assert isinstance(caught.value, OperationTimeoutError)
    assert caught.value.operation.status == "pending" and caught.value.operation.reason == "storage busy"
    assert 0.5 <= time.monotonic() - started < 3
    assert [dict(s.params)["wait"] for s in server.seen] == ["1"]  # the timeout, rounded up, in one request


def test_an_unknown_operation_is_not_found(serve):
    server = serve(script((404, {}, problem(404, "Not found", "no operation nope%2F1"))))
    with client(server.base) as c, pytest.raises(HttpNotFoundError):
        c.operation("nope/1")
    assert server.seen[0].path == "/api/operations/nope%2F1"


# -- change feed (client side; the routes are tested end to end once they exist) --------------------------

def change(position: int, kind: str = "put") -> dict:
    return {"position": f"p{position}", "operation": OP, "kind": kind, "record": {"n": position},
            "time": "2026-01-01T00:00:00+00:00"}


def test_changes_page_with_next_and_stop_at_the_first_empty_page(serve):
    pages = {None: {"items": [change(1), change(2)], "next": "p2", "frontier": "2026-01-01T00:00:00+00:00"},
             "p2": {"items": [change(3, "delete")], "next": "p3", "frontier": "2026-01-01T00:00:00+00:00"},
             "p3": {"items": [], "next": "p3", "frontier": "2026-01-01T00:00:00+00:00"}}
    server = serve(lambda seen: (200, {}, pages[dict(seen.params).get("after")]))
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with client(server.base) as c:
        got = list(c.changes(since=since, limit=2))
    assert [(ch.position, ch.kind, ch.record) for ch in got] == [("p1", "put", {"n": 1}), ("p2", "put", {"n": 2}),
                                                                 ("p3", "delete", {"n": 3})]
    assert isinstance(got[0], Change) and got[0].time == since and got[0].operation == OP
    assert server.seen[0].params == [("since", "2026-01-01T00:00:00+00:00"), ("limit", "2")]
    assert [dict(s.params).get("after") for s in server.seen] == [None, "p2", "p3"]
    assert all("wait" not in dict(s.params) for s in server.seen)


def test_changes_follow_long_polls_past_empty_pages(serve):
    answers = iter([{"items": [], "next": "p0"}, {"items": [], "next": "p0"}, {"items": [change(1)], "next": "p1"}])
    server = serve(lambda seen: (200, {}, next(answers)))
    with client(server.base) as c:
        feed = c.changes(after="p0", follow=True)
        assert next(feed).position == "p1"
    assert [dict(s.params) for s in server.seen] == [{"after": "p0", "wait": "60"}] * 3
    with client(server.base) as c, pytest.raises(ValueError):
        c.changes(after="p0", since="2026-01-01T00:00:00Z")


def test_history_sends_the_identity_only(serve):
    def answer(seen):
        if seen.path.endswith("/schema"):
            return 200, {}, {"index_keys": ["sku", "category"], "row_key": "name", "case_sensitive": False}
        return 200, {}, {"items": [change(1), change(2, "delete")]}
    server = serve(answer)
    with client(server.base) as c:
        record = {"sku": "A-1", "category": "Tools", "name": "hammer", "price": 12.5}
        got = c.history(record, as_of="2026-01-02T00:00:00+00:00")
        c.history(record)
    assert [ch.kind for ch in got] == ["put", "delete"]
    assert [s.path for s in server.seen] == ["/api/schema", "/api/records/history", "/api/records/history"]
    assert server.seen[1].params == [("sku", "A-1"), ("category", "Tools"), ("name", "hammer"),
                                     ("as_of", "2026-01-02T00:00:00+00:00")]
    with client(server.base) as c, pytest.raises(ValueError, match="aware"):
        c.history(record, as_of=datetime(2026, 1, 1))


def test_the_client_limits_are_the_servers():
    """catalog.remote repeats the API's limits (it imports nothing from the catalog): kept in step here."""
    from catalog.api.parsing import MAX_BODY_BYTES, MAX_WAIT, RESERVED_PARAMS
    from catalog.service import MAX_BULK_RECORDS

    assert (wire.MAX_RECORDS, wire.MAX_BODY_BYTES, wire.MAX_WAIT) == (MAX_BULK_RECORDS, MAX_BODY_BYTES, MAX_WAIT)
    assert set(wire.RESERVED_PARAMS) == set(RESERVED_PARAMS)
