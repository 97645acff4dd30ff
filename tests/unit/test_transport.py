"""The storage clients read proxy and CA settings from the environment once, with requests' meaning."""
from catalog.adapters.azure import environment_transport


def test_proxy_applies_unless_no_proxy_names_the_host(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = environment_transport("https://acct.table.core.windows.net")
    assert t.session.proxies == {"https": "http://proxy.example:3128"} and t.session.trust_env is False
    monkeypatch.setenv("NO_PROXY", ".core.windows.net,localhost")
    assert environment_transport("https://acct.table.core.windows.net").session.proxies == {}


def test_ca_bundle_from_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/custom.pem")
    assert environment_transport("https://a.queue.core.windows.net").connection_config.verify == \
        "/etc/ssl/certs/custom.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert environment_transport("https://a.queue.core.windows.net").connection_config.verify is True


def test_pool_is_larger_than_the_hosts_concurrency():
    adapter = environment_transport("http://127.0.0.1:10002/devstoreaccount1").session.get_adapter("http://x")
    assert adapter._pool_maxsize >= 24


# -- StorageSession: the short path the SDK's requests take ------------------------------------
import http.server  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402
from azure.core.exceptions import ServiceRequestError  # noqa: E402
from azure.core.rest import HttpRequest  # noqa: E402

from catalog.adapters.azure import StorageSession  # noqa: E402


@contextmanager
def recording_server():
    """A local HTTP server answering 201 with a small body; yields (port, the requests it saw)."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"line": self.requestline, "headers": dict(self.headers.items()), "body": body})
            reply = b'{"ok":true}'
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_PUT

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def _no_session_send(self, *args, **kwargs):
    raise AssertionError("the SDK's request took Session.send, not the short path")


def test_sdk_requests_take_the_short_path_and_reach_the_server_intact(monkeypatch):
    with recording_server() as (port, seen):
        transport = environment_transport(f"http://127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/devstoreaccount1/t1(PartitionKey='a%20b',RowKey='c')?timeout=10"
        request = HttpRequest("PUT", url, headers={"x-ms-version": "2019-02-02", "If-Match": "*"},
                              content=b'{"PartitionKey":"a b","d0":"AAE="}')
        monkeypatch.setattr(requests.Session, "send", _no_session_send)
        with transport:
            response = transport.send(request)
            response.read()
        assert response.status_code == 201 and response.json() == {"ok": True}
        [got] = seen
        assert got["line"] == "PUT /devstoreaccount1/t1(PartitionKey='a%20b',RowKey='c')?timeout=10 HTTP/1.1"
        assert got["body"] == b'{"PartitionKey":"a b","d0":"AAE="}'
        assert got["headers"]["x-ms-version"] == "2019-02-02" and got["headers"]["If-Match"] == "*"
        assert got["headers"]["Content-Length"] == str(len(got["body"]))


def test_short_path_sends_what_the_ordinary_path_sends():
    with recording_server() as (port, seen):
        url = f"http://127.0.0.1:{port}/acct/t(PartitionKey='x',RowKey='y')"
        for session in (requests.Session(), StorageSession()):
            session.trust_env = False
            session.request("PUT", url, headers={"x-ms-date": "Fri, 27 Nov 2026 06:00:00 GMT"},
                            data=b"{}", allow_redirects=False, timeout=(5, 5)).close()
        ordinary, short = seen
        assert short == ordinary


def test_short_path_goes_through_the_session_proxy():
    with recording_server() as (proxy_port, seen):
        session = StorageSession()
        session.trust_env = False
        session.proxies = {"http": f"http://127.0.0.1:{proxy_port}"}
        r = session.request("GET", "http://storage.invalid/acct/t()", allow_redirects=False, timeout=(5, 5))
        assert r.status_code == 201
        assert seen[0]["line"] == "GET http://storage.invalid/acct/t() HTTP/1.1"  # absolute form: sent to the proxy


def test_short_path_refuses_a_header_with_a_line_break():
    session = StorageSession()
    session.trust_env = False
    with pytest.raises(requests.exceptions.InvalidHeader):
        session.request("GET", "http://127.0.0.1:9/x", headers={"If-Match": "a\r\nX-Evil: 1"},
                        allow_redirects=False, timeout=(1, 1))


def test_connection_errors_still_map_to_the_sdk_exceptions():
    from devhost.azurite import free_port

    port = free_port()  # nothing listens there
    transport = environment_transport(f"http://127.0.0.1:{port}")
    with transport, pytest.raises(ServiceRequestError):
        transport.send(HttpRequest("GET", f"http://127.0.0.1:{port}/acct/t()"), connection_timeout=2)
