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
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.functions import FunctionSpec
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost")


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devhost"
    # Headers and body go out in two sends: with Nagle's algorithm on, every response would wait
    # for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this
    server: "HttpServer"

    def _serve(self) -> None:
        started = time.perf_counter()
        try:
            body = self._read_body()
        except ValueError as e:
            self._send(problem(400, "Bad Request", str(e)), close=True)
            return
        host = self.headers.get("Host") or "%s:%s" % self.server.server_address[:2]
        response, fname = self.server.dispatcher.handle(
            self.command, self.path, list(self.headers.items()), body, f"http://{host}")
        self._send(response)
        ms = (time.perf_counter() - started) * 1000
        who = f" (Functions.{fname})" if fname else ""
        log.info('"%s %s" %d %dB %.0fms%s', self.command, self.path, response.status,
                 len(response.body), ms, who)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str):
        # Any other method (TRACE, CONNECT, ...) is routed too, so a known route answers 405 with
        # Allow, as the Functions host does, instead of the stdlib's 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ValueError("malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise ValueError(f"bad Content-Length {length!r}") from None
        return self.rfile.read(n)

    def _send(self, response: Response, close: bool = False) -> None:
        self.send_response(response.status)
        skip = {"content-length", "transfer-encoding", "connection", "server", "date"}
        for k, v in response.headers:
            if k.lower() not in skip:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(response.body)))
        if close or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        log.debug("http: " + format, *args)


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.stopping = False
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="devhost-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
        self.server_close()
