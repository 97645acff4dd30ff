"""The dev host's HTTP trigger over real HTTP: routes, methods, headers, bodies, errors."""
from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
import time

import pytest
import requests

from devhost import DevHost
from devhost.httpserver import MAX_BODY_BYTES, HttpServer, Response
from tests.helpers import wait_until
from tests.integration.conftest import NEVER, TOY_APP, toy_queue_name


@pytest.fixture(scope="module")
def host(storage_connection, tmp_path_factory):
    d = tmp_path_factory.mktemp("http-host")
    (d / "host.json").write_text(json.dumps({"version": "2.0"}))
    settings = {"AzureWebJobsStorage": storage_connection, "TOY_QUEUE": toy_queue_name(),
                "TOY_TIMER_SCHEDULE": NEVER}
    h = DevHost(TOY_APP, port=0, host_json=d / "host.json", settings=settings,
                settings_file=d / "none.json", queues=False, timers=False).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:  # keep-alive: many requests over one connection
        yield s


def test_route_parameter_and_query(host, http):
    r = http.get(host.url("hello/Ada"), params={"greeting": "Hi"})
    assert (r.status_code, r.text) == (200, "Hi, Ada!")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_request_is_passed_through(host, http):
    r = http.post(host.url("echo/a/b%20c") + "?x=1&x=2&empty=", data=b'{"k": "v"}',
                  headers={"X-Custom": "yes", "Content-Type": "application/json"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["url"] == host.url("echo/a/b%20c") + "?x=1&x=2&empty="
    assert doc["route_params"] == {"rest": "a/b c"}
    assert doc["params"] == {"x": "1,2", "empty": ""}
    assert doc["headers"]["x-custom"] == "yes" and doc["headers"]["content-type"] == "application/json"
    assert doc["body"] == '{"k": "v"}'


def test_chunked_request_body(host, http):
    r = http.put(host.url("echo"), data=(part for part in [b"chunk-1,", b"chunk-2"]))
    assert r.json()["body"] == "chunk-1,chunk-2" and r.json()["route_params"] == {}


def test_route_precedence_and_constraints(host, http):
    assert http.get(host.url("items/new")).json() == {"route": "literal"}
    assert http.get(host.url("items/42")).json() == {"route": "int", "id": 42}
    assert http.get(host.url("items/forty-two")).json() == {"route": "slug", "slug": "forty-two", "method": "GET"}
    assert http.delete(host.url("items/42")).json()["route"] == "slug"


def test_optional_parameter_on_an_async_function(host, http):
    assert http.get(host.url("optional")).text == "<none>"
    assert http.get(host.url("optional/given")).text == "given"


def test_context_parameter(host, http):
    doc = http.get(host.url("whoami")).json()
    assert doc["function"] == "whoami" and len(doc["invocation"]) == 36


def test_response_status_headers_and_repeated_values(host, http):
    r = http.post(host.url("created"), json={"a": [1, 2]})
    assert r.status_code == 201
    assert r.json() == {"a": [1, 2]}
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Location"] == "/api/created/1"
    assert r.raw.headers.getlist("X-Multi") == ["one", "two"]
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.headers["Content-Length"] == str(len(r.content))


def test_unknown_route_is_404(host, http):
    for url in (host.url("no/such/route"), host.base_url + "/hello/Ada", host.base_url + "/apihello"):
        r = http.get(url)
        assert r.status_code == 404, url
        assert r.headers["Content-Type"] == "application/problem+json"


def test_wrong_method_is_405_with_allow(host, http):
    r = http.post(host.url("hello/Ada"))
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"
    assert r.json()["status"] == 405
    assert http.get(host.url("echo/x")).headers["Allow"] == "POST, PUT"


def test_exception_is_500_problem_and_logged(host, http, caplog):
    with caplog.at_level(logging.ERROR, logger="devhost"):
        r = http.get(host.url("boom"))
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["detail"] == "Exception while executing function: Functions.boom: RuntimeError"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Functions.boom" in logged and "RuntimeError: the toy exploded" in logged and "Traceback" in logged
    assert http.get(host.url("hello/again")).status_code == 200  # the host keeps serving


def test_reserved_admin_route_is_refused_like_the_host(host, http):
    assert "built in routes" in host.errors["reserved_route"]
    assert http.post(host.url("admin/recover")).status_code == 404
    assert "reserved_route: [error]" in host.describe()


def test_host_status_endpoint(host, http):
    r = http.get(host.base_url + "/admin/host/status")
    assert r.status_code == 200 and r.json()["state"] == "Running"


def test_function_list(host):
    text = host.describe()
    assert f"hello: [GET] {host.base_url}/api/hello/{{name}}" in text
    assert "boom: [ALL]" in text
    assert "consume: queueTrigger (toy-" in text and "not polled" in text


def test_route_prefix_from_host_json(storage_connection, tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "v1"}}}))
    settings = {"AzureWebJobsStorage": storage_connection, "TOY_QUEUE": toy_queue_name(), "TOY_TIMER_SCHEDULE": NEVER}
    with DevHost(TOY_APP, port=0, host_json=tmp_path / "host.json", settings=settings,
                 settings_file=tmp_path / "none.json", queues=False, timers=False) as h:
        assert h.url("hello/x") == f"{h.base_url}/v1/hello/x"
        assert requests.get(h.url("hello/x")).text == "Hello, x!"
        assert requests.get(f"{h.base_url}/api/hello/x").status_code == 404


# ---------------------------------------------------------------------- HTTP/1.1 over raw sockets

def exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send `data` on a new connection and read until the server closes it: (all it sent, seconds).

    A server that never closes fails the test through the socket timeout instead of hanging it.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def head_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


@pytest.fixture
def calls(host):
    """The calls of the toy app's ``counted`` function since the test started."""
    host.module.EVENTS.clear()
    return lambda: host.module.events("request")


def test_counted_route_records_and_logs(host, http, calls, caplog):
    with caplog.at_level(logging.INFO, logger="devhost"):
        r = http.post(host.url("counted") + "?x=1", data=b"abc")
    assert (r.status_code, r.text) == (200, "3 bytes")
    assert calls() == [{"method": "POST", "size": 3, "head": "abc"}]
    assert any(rec.getMessage().startswith('"POST /api/counted?x=1" 200 7B ')
               and rec.getMessage().endswith(" (Functions.counted)") for rec in caplog.records)


def test_server_and_date_headers(host, http):
    r = http.get(host.url("hello/Ada"))
    assert r.headers["Server"] == "devhost"
    assert r.headers["Date"].endswith(" GMT")
    assert "uvicorn" not in json.dumps(dict(r.headers)).lower()


def test_keep_alive_answers_do_not_wait_for_delayed_acks(host, http):
    # Head and body go out in separate sends: without TCP_NODELAY each answer on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK.
    http.get(host.base_url + "/")
    took = []
    for _ in range(20):
        started = time.perf_counter()
        assert http.get(host.base_url + "/").status_code == 200
        took.append(time.perf_counter() - started)
    assert sorted(took)[len(took) // 2] < 0.025, took


def test_head_has_no_body_on_a_kept_alive_connection(host):
    # HEAD, then GET pipelined on the same connection: the second answer starts right after the
    # first one's head, so no body bytes were sent for HEAD although Content-Length says 48.
    answer, _ = exchange(host.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, rest = answer.split(b"\r\n\r\n", 1)
    assert status_of(first) == 200 and head_of(first + b"\r\n\r\n")["content-length"] == "48"
    assert status_of(rest) == 200 and rest.endswith(b"Your Functions app is up and running (devhost).\n")


def test_short_body_then_close_is_not_dispatched(host, calls):
    answer, _ = exchange(host.port, b"POST /api/counted HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                         half_close=True)
    assert not answer.startswith(b"HTTP/1.1 2"), answer
    assert http_ok(host)  # the server is fine, and has had time to dispatch if it were going to
    assert calls() == [{"method": "POST", "size": 0, "head": ""}]  # only http_ok's call


def http_ok(host) -> bool:
    return requests.post(host.url("counted"), timeout=10).status_code == 200


FRAMING_ERRORS = {
    "negative content-length": (b"Content-Length: -1\r\n\r\nabc", {400}),
    "non-numeric content-length": (b"Content-Length: ten\r\n\r\nabc", {400}),
    "two different content-lengths": (b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", {400}),
    "negative chunk size": (b"Transfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n", {400}),
    "non-hex chunk size": (b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", {400}),
    "chunked, gzip": (b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", {400, 501}),
    "gzip transfer-encoding": (b"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", {400, 501}),
}


@pytest.mark.parametrize("rest", FRAMING_ERRORS.values(), ids=FRAMING_ERRORS.keys())
def test_framing_errors_are_refused_quickly_and_never_dispatched(host, calls, rest):
    tail, statuses = rest
    # No half-close: the server must answer and close on its own, not wait for more bytes.
    answer, seconds = exchange(host.port, b"POST /api/counted HTTP/1.1\r\nHost: x\r\n" + tail)
    assert status_of(answer) in statuses
    assert seconds < 3
    assert calls() == []


def test_chunked_with_content_length_is_read_as_chunked_and_closed(host, calls):
    answer, _ = exchange(host.port, b"POST /api/counted HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                    b"Content-Length: 3\r\n\r\n5\r\nabcde\r\n0\r\n\r\n")
    assert status_of(answer) == 200 and head_of(answer)["connection"] == "close"
    assert calls() == [{"method": "POST", "size": 5, "head": "abcde"}]


def test_content_length_over_the_cap_is_413_at_once(host, calls):
    # Only the head is sent: the answer comes without the server waiting for (or allocating) 1 TB.
    answer, seconds = exchange(host.port, b"POST /api/counted HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 1000000000000\r\n\r\n")
    assert status_of(answer) == 413 and seconds < 3
    head = head_of(answer)
    assert head["content-type"] == "application/problem+json" and head["connection"] == "close"
    doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert doc["status"] == 413 and str(MAX_BODY_BYTES) in doc["detail"]
    assert calls() == []


class Gate:
    """A dispatcher that records what it is handed and, if asked, waits to be released."""

    def __init__(self, block: bool = False):
        self.calls: list[tuple[str, str, list[tuple[str, str]], bytes, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()

    def handle(self, method, target, headers, body, base_url):
        self.calls.append((method, target, headers, body, base_url))
        self.entered.set()
        assert self.release.wait(10)
        return Response(200, [("Content-Type", "text/plain")], b"done"), "gate"


@pytest.fixture
def small_server():
    """An HttpServer capped at 1000 body bytes around a Gate."""
    gate = Gate()
    server = HttpServer(("127.0.0.1", 0), gate, max_body_bytes=1000).start()
    yield server, gate
    server.stop()


def test_raw_target_headers_and_body_reach_the_dispatcher(small_server):
    server, gate = small_server
    answer, _ = exchange(server.port, b"PATCH /api/a%2Fb/%7E?x=%20&y&x=2 HTTP/1.1\r\nHost: here:1\r\n"
                                      b"X-Twice: 1\r\nX-Latin: \xe9t\xe9\r\nX-Twice: 2\r\n"
                                      b"Content-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\ndone")
    [(method, target, headers, body, base_url)] = gate.calls
    assert (method, target, body, base_url) == ("PATCH", "/api/a%2Fb/%7E?x=%20&y&x=2", b"abc", "http://here:1")
    assert headers == [("host", "here:1"), ("x-twice", "1"), ("x-latin", "\xe9t\xe9"), ("x-twice", "2"),
                       ("content-length", "3"), ("connection", "close")]


def test_body_cap_by_content_length(small_server):
    server, gate = small_server
    ok, _ = exchange(server.port, b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"Content-Length: 1000\r\n\r\n" + b"a" * 1000)
    assert status_of(ok) == 200 and gate.calls[0][3] == b"a" * 1000
    # One byte over: 413 before any of the body is sent.
    over, seconds = exchange(server.port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    assert status_of(over) == 413 and seconds < 3 and len(gate.calls) == 1
    assert b'"detail": "the request body is larger than 1000 bytes"' in over


def test_chunked_body_is_413_as_soon_as_it_passes_the_cap(small_server):
    server, gate = small_server
    ok, _ = exchange(server.port, b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + (b"1f4\r\n" + b"b" * 500 + b"\r\n") * 2
                                  + b"0\r\n\r\n")
    assert status_of(ok) == 200 and gate.calls[0][3] == b"b" * 1000
    # 1200 bytes and no last chunk: the answer comes without the rest of the body.
    over, seconds = exchange(server.port, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          + (b"258\r\n" + b"c" * 600 + b"\r\n") * 2)
    assert status_of(over) == 413 and seconds < 3
    assert head_of(over)["connection"] == "close"
    assert len(gate.calls) == 1


def test_two_hundred_simultaneous_connections_all_get_answers(host):
    # With a listen backlog of 5 the connects alone took over 10 s (SYN retries); 2048 takes none.
    deadline = time.monotonic() + 10
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for _ in range(200):  # 200 connections open at once, then 200 requests
            conns.append(socket.create_connection(("127.0.0.1", host.port), timeout=10))
        for i, s in enumerate(conns):
            path = b"/admin/host/status" if i % 2 else b"/api/hello/c%d" % i
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
        answers = {}
        while len(answers) < len(conns):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(answers)} of {len(conns)} connections answered in 10 s"
            for key, _ in sel.select(remaining):
                chunk = key.fileobj.recv(65536)
                if chunk:
                    key.data.extend(chunk)
                else:
                    sel.unregister(key.fileobj)
                    answers[key.fileobj] = bytes(key.data)
    finally:
        sel.close()
        for s in conns:
            s.close()
    assert sum(status_of(a) == 200 for a in answers.values()) == 200
    assert sum(b'"state": "Running"' in a for a in answers.values()) == 100
    assert sum(b"Hello, c" in a for a in answers.values()) == 100


def test_stop_returns_promptly_with_idle_keep_alive_connections():
    server = HttpServer(("127.0.0.1", 0), Gate()).start()
    idle = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"done"):  # the whole answer: the connection is idle after it
            answer += s.recv(65536)
        assert status_of(answer) == 200
        idle.append(s)
    never_sent = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # connected, silent
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    for s in idle + [never_sent]:
        assert s.recv(65536) == b""  # closed by the server
        s.close()


def test_connection_close_while_stopping():
    gate = Gate(block=True)
    server = HttpServer(("127.0.0.1", 0), gate).start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # a keep-alive request
        assert gate.entered.wait(10)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        wait_until(lambda: server.stopping, what="the server to be stopping")
        gate.release.set()
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    stopper.join(10)
    assert not stopper.is_alive()
    assert status_of(answer) == 200 and answer.endswith(b"done")
    assert head_of(answer)["connection"] == "close"


class Fixed:
    """A dispatcher that answers every request with one response."""

    def __init__(self, response: Response):
        self.response = response

    def handle(self, method, target, headers, body, base_url):
        return self.response, "fixed"


def test_a_response_header_that_cannot_be_sent_is_a_500_problem(caplog):
    server = HttpServer(("127.0.0.1", 0), Fixed(Response(200, [("X-Split", "a\r\nInjected: yes")], b"x"))).start()
    try:
        with caplog.at_level(logging.ERROR, logger="devhost"):
            r = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
    finally:
        server.stop()
    assert r.status_code == 500 and "Injected" not in r.headers
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "Illegal header value" in caplog.text


def test_204_has_neither_body_nor_content_length():
    server = HttpServer(("127.0.0.1", 0), Fixed(Response(204, [("X-A", "1")], b"dropped"))).start()
    try:
        answer, _ = exchange(server.port, b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n"
                                          b"DELETE /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        server.stop()
    first, second = answer.split(b"HTTP/1.1 204", 2)[1:]
    assert b"content-length" not in first.lower() and first.endswith(b"\r\n\r\n") and b"x-a: 1" in first.lower()
    assert b"dropped" not in answer and second.endswith(b"\r\n\r\n")


def test_idle_keep_alive_is_closed_and_a_stalled_body_is_408():
    gate = Gate()
    server = HttpServer(("127.0.0.1", 0), gate, idle_seconds=1).start()
    try:
        stalled, seconds = exchange(server.port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert status_of(stalled) == 408 and head_of(stalled)["connection"] == "close" and 0.9 < seconds < 4
        idle, seconds = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive, then idle
        assert status_of(idle) == 200 and idle.endswith(b"done") and 0.9 < seconds < 4
        assert [c[0] for c in gate.calls] == ["GET"]  # the stalled POST never ran
    finally:
        server.stop()
