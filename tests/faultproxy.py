"""A TCP proxy that loses answers: it passes each HTTP/1.1 request through to the app, reads the app's
whole response (so the request was served: whatever it writes is written), and then, when told to,
closes the client's connection without sending a byte of it. This is the lost answer a client's
retry must survive (a timeout, a reset, a load balancer dropping the connection).

It understands just enough HTTP to find message boundaries on keep-alive connections: a header
block, then a body of Content-Length bytes or chunked. One request at a time per connection, as
requests/urllib3 send them."""
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Exchange:
    """One request the app answered, and whether the proxy dropped the answer."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    status: int
    body: bytes  # the response body
    dropped: bool

    def json(self):
        return json.loads(self.body)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


def _read_head(stream: BinaryIO) -> tuple[bytes, str, dict[str, str]] | None:
    """(raw header block, start line, headers) or None at a clean end of stream."""
    lines = []
    while True:
        line = stream.readline(65537)
        if not line:
            if lines:
                raise ConnectionError("connection closed inside a header block")
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    start = lines[0].decode("latin-1").strip()
    headers = {}
    for raw in lines[1:-1]:
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return b"".join(lines), start, headers


def _read_body(stream: BinaryIO, headers: dict[str, str], *, until_close: bool) -> bytes:
    """The body's bytes exactly as framed on the wire (chunks and all), to forward unchanged."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            size_line = stream.readline()
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = stream.readline()
                    raw += line
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            raw += stream.read(size + 2)
    if "content-length" in headers:
        return stream.read(int(headers["content-length"]))
    return stream.read() if until_close else b""


def _dechunk(raw: bytes) -> bytes:
    out, rest = bytearray(), raw
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


def _without(raw_head: bytes, names: frozenset[str]) -> bytes:
    lines = raw_head.split(b"\r\n")
    return b"\r\n".join(line for line in lines
                         if line.split(b":", 1)[0].strip().decode("latin-1").lower() not in names)


class FaultProxy:
    """Listens on a free local port and forwards to `upstream` (host, port). `drop(request)` decides,
    per request, whether its answer is lost. Request headers named in `strip` are removed on the way
    to the app (the app never sees them; `drop` and `exchanges` do). Every exchange is kept in
    `exchanges`, in order."""

    def __init__(self, upstream: tuple[str, int], drop: Callable[[Request], bool], strip: tuple[str, ...] = ()):
        self.upstream = upstream
        self.drop = drop
        self.strip = frozenset(name.lower() for name in strip)
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()

    def base(self, route_prefix: str = "/api") -> str:
        return f"http://127.0.0.1:{self.port}{route_prefix}"

    def dropped(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.dropped]

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        from_client = client.makefile("rb")
        from_app = upstream.makefile("rb")
        try:
            while True:
                head = _read_head(from_client)
                if head is None:
                    return
                raw_head, start, headers = head
                method, path, _ = start.split(" ", 2)
                body = _read_body(from_client, headers, until_close=False)
                upstream.sendall((_without(raw_head, self.strip) if self.strip else raw_head) + body)

                answer = _read_head(from_app)
                if answer is None:
                    return
                raw_answer, status_line, answer_headers = answer
                status = int(status_line.split(" ", 2)[1])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                answer_body = b"" if no_body else _read_body(from_app, answer_headers, until_close=True)
                request = Request(method, path, headers)
                lose = self.drop(request)
                content = _dechunk(answer_body) if "chunked" in answer_headers.get(
                    "transfer-encoding", "").lower() else answer_body
                with self._lock:
                    self.exchanges.append(Exchange(method, path, headers, status, content, lose))
                if lose:
                    return  # the app has served it; the client hears nothing
                client.sendall(raw_answer + answer_body)
        except (OSError, ValueError):
            return
        finally:
            for s in (from_client, from_app):
                s.close()
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
