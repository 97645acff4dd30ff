"""The HTTP trigger: a local HTTP server that routes requests to the app's HTTP functions.

Routes are ``/<routePrefix>/<route>`` (routePrefix from host.json, default ``api``). A path no
function route matches gets 404; a path some route matches, but not for this method, gets 405
with ``Allow``. The request reaches the function as ``func.HttpRequest`` (headers keyed in
lower case, repeated query keys joined with ","); its ``func.HttpResponse`` is written back
with every header value, and a Content-Type from mimetype/charset when the function set none.
An exception in the function gives a 500 problem+json body and a logged traceback.

Authorization levels are not enforced, exactly as with ``func start``: function and admin keys
are only checked once deployed.

Besides the app's routes the server answers ``GET /`` and ``GET /admin/host/status``
(``{"state": "Running"}``), which tools use to wait for a Functions host to come up.

HTTP/1.1 itself is parsed by uvicorn with its h11 protocol (RFC 9112 framing): a malformed
request line or header, a bad, negative or repeated disagreeing Content-Length, a malformed
chunk, an unsupported Transfer-Encoding (anything but ``chunked``), or a request head over
64 KiB is answered 400 by h11/uvicorn and never reaches a function; a client that closes the
connection before its body is complete gets no answer and nothing runs. A request with both
Transfer-Encoding: chunked and Content-Length is read as chunked and its connection closed
after the answer (RFC 9112 6.1). A request body is capped at ``max_body_bytes`` (default
``MAX_BODY_BYTES``, 17 MiB: the catalog API's own 16 MiB limit plus slack, so the app still
answers its own 413 for bodies just over 16 MiB): a Content-Length over the cap is answered
413 problem+json before any of the body is read, and a chunked body is answered 413 as soon
as it passes the cap; either way the connection is closed.

uvicorn runs on its own asyncio event loop in a background thread (``HttpServer.start()``
returns once the socket listens; port 0 picks a free port, known from ``.port`` right away).
The functions are synchronous and may block, so each request is dispatched on a thread pool
the server owns (``max_workers``, default 32): more simultaneous requests wait for a free
worker, their connections stay open (listen backlog 2048). Connections have TCP_NODELAY set;
idle keep-alive connections are closed after 120 s, and a request body that stops arriving
for 120 s is answered 408 (``idle_seconds``). Responses carry ``Server: devhost``, a ``Date``
and a Content-Length (HEAD: no body; 204 and 304: neither body nor Content-Length); while the
server is stopping they carry ``Connection: close``. ``stop()`` closes idle connections at
once and gives requests in flight up to 5 s to finish. Each request is logged on the
"devhost" logger as ``"METHOD target" status sizeB timems (Functions.name)``; uvicorn's access
log is off and its own logger ("uvicorn.error", which reports refused requests) is set to
WARNING.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import h11
import uvicorn

from devhost.functions import FunctionSpec
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost")

MAX_BODY_BYTES = 17 * 1024 * 1024  # request body cap: catalog/api.py's 16 MiB plus 1 MiB slack
MAX_WORKERS = 32  # threads the functions run on; more simultaneous requests wait for one
BACKLOG = 2048  # listen backlog (the kernel may cap it at net.core.somaxconn)
KEEP_ALIVE_SECONDS = 120  # idle keep-alive connections, and request bodies that stall, end after this
MAX_HEAD_BYTES = 64 * 1024  # request line + headers; larger is a 400 from h11
STOP_GRACE_SECONDS = 5  # stop() waits this long for requests in flight


@dataclass
class HttpRoute:
    spec: FunctionSpec
    template: RouteTemplate
    methods: frozenset[str] | None  # None: any method


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def problem(status: int, title: str, detail: str, extra_headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    return Response(status, [("Content-Type", "application/problem+json"), *(extra_headers or [])], body)


class Router:
    """Matches a request path and method to one HTTP function."""

    def __init__(self, routes: list[HttpRoute], prefix: str):
        self.prefix = prefix.strip("/")
        # Stable sort: precedence first, then the order the app registered them.
        self.routes = sorted(routes, key=lambda r: r.template.precedence)

    def relative(self, path: str) -> str | None:
        """The path below the route prefix, or None when it is outside it."""
        if not self.prefix:
            return path
        head = "/" + self.prefix
        if path.lower() == head.lower():
            return ""
        if path.lower().startswith(head.lower() + "/"):
            return path[len(head):]
        return None

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | tuple[None, list[str]] | None:
        """(route, values) on a match; (None, allowed methods) on a method mismatch; None if no route."""
        rel = self.relative(path)
        if rel is None:
            return None
        allowed: set[str] = set()
        for route in self.routes:
            values = route.template.match(rel)
            if values is None:
                continue
            if route.methods is None or method in route.methods:
                return route, values
            allowed.update(route.methods)
        if allowed:
            return None, sorted(allowed)
        return None


def _join(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers:
        out[k] = f"{out[k]},{v}" if k in out else v
    return out


def to_response(result: object) -> Response:
    """The HTTP response for what an HTTP function returned."""
    if isinstance(result, func.HttpResponse):
        headers = list(result.headers.items())
        names = {k.lower() for k, _ in headers}
        if "content-type" not in names:
            ct = result.mimetype
            if ct.startswith("text/"):
                ct = f"{ct}; charset={result.charset}"
            headers.append(("Content-Type", ct))
        return Response(int(result.status_code), headers, result.get_body() or b"")
    if result is None:
        return Response(204, [], b"")
    if isinstance(result, str):
        return Response(200, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8"))
    if isinstance(result, (bytes, bytearray)):
        return Response(200, [("Content-Type", "application/octet-stream")], bytes(result))
    raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(result).__name__}")


class Dispatcher:
    """Turns one HTTP request into a function call and its result into a response."""

    def __init__(self, router: Router, call: Callable[[FunctionSpec, object], object],
                 started: float | None = None):
        self.router = router
        self._call = call
        self._started = time.monotonic() if started is None else started

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
               base_url: str) -> tuple[Response, str | None]:
        """(response, name of the function that ran or None)."""
        parts = urlsplit(target)
        path = parts.path or "/"
        found = self.router.match(method, path)
        if found is None:
            builtin = self._builtin(method, path)
            if builtin is not None:
                return builtin, None
            return problem(404, "Not Found", f"no function route matches {path}"), None
        route, values = found
        if route is None:
            allow = ", ".join(values)
            return problem(405, "Method Not Allowed", f"{path} accepts {allow}", [("Allow", allow)]), None
        params: dict[str, str] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        request = func.HttpRequest(
            method=method, url=base_url + target, headers=_join(headers), params=params,
            route_params=values, body=body)
        spec = route.spec
        try:
            result = self._call(spec, request)
            response = to_response(result)
        except Exception as e:
            log.error("Executed 'Functions.%s' (Failed): %s\n%s", spec.name, e, traceback.format_exc())
            return problem(500, "Internal Server Error",
                           f"Exception while executing function: Functions.{spec.name}: "
                           f"{type(e).__name__}"), spec.name
        return response, spec.name

    def _builtin(self, method: str, path: str) -> Response | None:
        if method not in ("GET", "HEAD"):
            return None
        if path == "/":
            return Response(200, [("Content-Type", "text/plain; charset=utf-8")],
                            b"Your Functions app is up and running (devhost).\n")
        if path.rstrip("/").lower() == "/admin/host/status":
            body = json.dumps({"id": "devhost", "state": "Running", "version": "devhost",
                               "processUptime": int((time.monotonic() - self._started) * 1000)}).encode()
            return Response(200, [("Content-Type", "application/json; charset=utf-8")], body)
        return None


_SKIP_HEADERS = {"content-length", "transfer-encoding", "connection", "server", "date"}
_NO_BODY = {204, 304}  # statuses that carry neither a body nor Content-Length (RFC 9110)


class _Uvicorn(uvicorn.Server):
    """A uvicorn server that says when it listens and leaves process signals alone."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event):
        super().__init__(config)
        self.ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGINT/SIGTERM belong to whoever runs the host (devhost/serve.py stops it). uvicorn
        # (>= 0.29) installs its handlers only when serving from the main thread, which this
        # server never does; this override makes sure it never does.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class HttpServer:
    """The dev host's HTTP server: uvicorn (h11) on a background thread, functions on a pool.

    :param address: (host, port) to listen on; port 0 picks a free one (see ``port``).
    :param dispatcher: turns each request into a function call (``Dispatcher.handle``).
    :param max_body_bytes: largest request body accepted; larger is a 413 (default
        ``MAX_BODY_BYTES``, 17 MiB).
    :param max_workers: threads the dispatcher runs on (default ``MAX_WORKERS``, 32); requests
        beyond that wait for a free thread.
    :param idle_seconds: an idle keep-alive connection is closed, and a request body that stops
        arriving is answered 408, after this many seconds (default ``KEEP_ALIVE_SECONDS``, 120).

    The socket is bound and listening when the constructor returns (an address in use raises
    there); ``start()`` returns once uvicorn serves it. ``stopping`` is True from ``stop()`` on.
    """

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher, *,
                 max_body_bytes: int = MAX_BODY_BYTES, max_workers: int = MAX_WORKERS,
                 idle_seconds: float = KEEP_ALIVE_SECONDS):
        self.dispatcher = dispatcher
        self.max_body_bytes = max_body_bytes
        self.idle_seconds = idle_seconds
        self.stopping = False
        host, port = address[0], address[1]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and uvicorn writes a response's head and body in separate sends (with Nagle's algorithm
        # each keep-alive answer would wait ~40 ms for the client's delayed ACK).
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="devhost-http")
        config = uvicorn.Config(
            self._asgi, http="h11", loop="asyncio", lifespan="off", ws="none", interface="asgi3",
            log_config=None, log_level="warning", access_log=False,  # our own log line instead
            server_header=False, date_header=True,  # "Server: devhost" is added per response
            proxy_headers=False, backlog=BACKLOG, limit_concurrency=None,
            timeout_keep_alive=idle_seconds, timeout_graceful_shutdown=STOP_GRACE_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES)
        self._ready = threading.Event()
        self._uvicorn = _Uvicorn(config, self._ready)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> HttpServer:
        if self._thread is not None:
            raise RuntimeError("HttpServer.start() was already called")
        self._thread = threading.Thread(target=self._run, name="devhost-http", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self._uvicorn.started:
            raise RuntimeError(f"the HTTP server did not start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        self.stopping = True
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_GRACE_SECONDS + 5)
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the event loop thread

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start(), or logged when serving
            self._error = e
            if self._ready.is_set():
                log.error("the HTTP server stopped: %r", e)
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        try:
            await self._uvicorn.serve(sockets=[self._socket])
        finally:
            # Connections still open after the grace period (a request that never completed).
            for conn in list(self._uvicorn.server_state.connections):
                conn.transport.abort()
            await asyncio.sleep(0)

    async def _asgi(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method: str = scope["method"]
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]

        body = bytearray()
        too_large = stalled = False
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        # Both framings (h11 reads it as chunked): RFC 9112 6.1 says close after answering.
        ambiguous = declared is not None and any(k == b"transfer-encoding" for k, _ in scope["headers"])
        if declared is not None and int(declared) > self.max_body_bytes:  # h11 has validated it
            too_large = True
        while not too_large:
            try:
                message = await asyncio.wait_for(receive(), self.idle_seconds)
            except TimeoutError:
                stalled = True
                break
            if message["type"] == "http.disconnect":
                return  # the client left before its body was complete: nothing to run
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                too_large = True
            elif not message.get("more_body", False):
                break
        fname = None
        if too_large:
            response = problem(413, "Payload Too Large",
                               f"the request body is larger than {self.max_body_bytes} bytes")
        elif stalled:
            response = problem(408, "Request Timeout",
                               f"the request body did not arrive within {self.idle_seconds:g} s")
        else:
            host = next((v for k, v in headers if k == "host"), None) or "{}:{}".format(*self.server_address)
            try:
                response, fname = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self.dispatcher.handle, method, target, headers, bytes(body),
                    f"http://{host}")
            except Exception as e:
                log.error("%s %s failed: %s\n%s", method, target, e, traceback.format_exc())
                response = problem(500, "Internal Server Error", f"{type(e).__name__} in the dev host")
        try:
            start, payload = self._encode(response, close=too_large or stalled or ambiguous)
        except Exception as e:
            log.error("%s %s: cannot send the response: %s\n%s", method, target, e, traceback.format_exc())
            response = problem(500, "Internal Server Error", f"invalid response: {type(e).__name__}")
            start, payload = self._encode(response, close=True)
        ms = (time.perf_counter() - started) * 1000
        who = f" (Functions.{fname})" if fname else ""
        log.info('"%s %s" %d %dB %.0fms%s', method, target, response.status, len(response.body), ms, who)
        await send(start)  # logged first: the line is there once the client has its answer
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def _encode(self, response: Response, close: bool = False) -> tuple[dict[str, Any], bytes]:
        """The ASGI response start message and the body to send (uvicorn drops it for HEAD)."""
        status = response.status
        if not 200 <= status <= 599:
            raise ValueError(f"status {status} cannot be a final HTTP response")
        headers = [(b"Server", b"devhost")]
        for k, v in response.headers:
            if k.lower() not in _SKIP_HEADERS:
                headers.append((k.encode("latin-1"), str(v).encode("latin-1")))
        body = response.body
        if status in _NO_BODY:
            body = b""
        else:
            headers.append((b"Content-Length", str(len(body)).encode()))
        if close or self.stopping:
            headers.append((b"connection", b"close"))  # lower case, as uvicorn looks for it
        h11.Response(status_code=status, headers=headers)  # raises on a header h11 would refuse to send
        return {"type": "http.response.start", "status": status, "headers": headers}, body
