"""The status marks' batch encoding (adapters.azure.merge_changeset) on Azurite, and its fallback."""
import http.server
import logging
import re
import threading

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import TableClient, UpdateMode

from catalog.adapters.azure import merge_changeset
from tests.helpers import unique


def test_the_changeset_names_each_entity_with_quoted_keys_and_no_if_match():
    boundary, body = merge_changeset("http://127.0.0.1:10002/acct/", "marks",
                                     [{"PartitionKey": "wal03", "RowKey": "a'b c", "status": "applied"}])
    text = body.decode("ascii")
    assert text.startswith(f"--{boundary}\r\n") and text.endswith(f"--{boundary}--\r\n")
    assert "PATCH http://127.0.0.1:10002/acct/marks(PartitionKey='wal03',RowKey='a%27%27b%20c') HTTP/1.1" in text
    assert "If-Match" not in text  # insert-or-merge: no precondition
    assert merge_changeset("http://x/acct", "t", [{"PartitionKey": "p", "RowKey": "r", "b": b"1"}]) is None


REFUSED = (400, "application/json", b'{"odata.error":{"code":"InvalidInput","message":{"value":"refused"}}}')


class RefusingProxy:
    """Forwards every request to Azurite unchanged, except that it answers the first `$batch` with
    `reply` (status, content type, body): by default a 400, as Azure answers a batch it cannot parse
    (Azurite answers such batches 500 or accepts them)."""

    def __init__(self, target_port: int, reply: tuple[int, str, bytes] = REFUSED):
        import http.client
        import http.server
        import threading

        proxy = self
        self.refused = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("$batch") and not proxy.refused:
                    proxy.refused += 1
                    status, content_type, body = reply
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                upstream.request(self.command, self.path, body=body,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("reply", [
    REFUSED,
    (202, "multipart/mixed; boundary=x", b"not a multipart reply at all"),  # success it cannot parse
    (202, "multipart/mixed; boundary=x", b"--x\r\nHTTP/1.1 204 No Content\r\n\r\n--x--"),  # 1 part for 2
    (409, "application/json", b'{"odata.error":{"code":"Conflict"}}'),
    (200, "text/plain", b"\xff\xfe"),
], ids=["400", "202 unparsable", "202 too few parts", "409", "200 not text"])
def test_any_answer_but_a_parsed_success_falls_back_to_the_sdk_and_still_writes(azurite, caplog, reply):
    from azure.data.tables import TableServiceClient

    from catalog.adapters.azure import CLIENT_OPTIONS, AzureTableStore
    from devhost.azurite import DEV_ACCOUNT, DEV_KEY

    proxy = RefusingProxy(azurite.endpoints.table_port, reply)
    try:
        connection = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                      f"TableEndpoint=http://127.0.0.1:{proxy.port}/{DEV_ACCOUNT};")
        store = AzureTableStore(TableServiceClient.from_connection_string(connection, **CLIENT_OPTIONS))
        table = unique("fb")
        store.create_table(table)
        with caplog.at_level(logging.WARNING, logger="catalog.adapters.azure"):
            store.merge_batch(table, [{"PartitionKey": "p", "RowKey": r, "status": "applied"} for r in "ab"])
        assert proxy.refused == 1
        assert any("sending it through the SDK" in r.getMessage() for r in caplog.records)
        assert [store.get(table, "p", r)["status"] for r in "ab"] == ["applied", "applied"]
    finally:
        proxy.close()


def test_the_encoded_path_is_what_writes_marks(azure_table_store, monkeypatch):
    table = unique("mk")
    azure_table_store.create_table(table)
    client = azure_table_store._client(table)

    def no_sdk_transaction(*args, **kwargs):
        raise AssertionError("the marks went through submit_transaction")
    monkeypatch.setattr(type(client), "submit_transaction", no_sdk_transaction)
    azure_table_store.merge_batch(table, [{"PartitionKey": "p", "RowKey": f"r{i}", "status": "applied"}
                                          for i in range(150)])  # two transactions
    assert sum(1 for _ in azure_table_store.query(table, "p", equals={"status": "applied"})) == 150


class RecordingServer:
    """Records each $batch body and answers it as the service answers a successful one."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bodies.append(body)
                parts = body.count(b"Content-ID: ")
                reply = ("--batchresponse_r\r\nContent-Type: multipart/mixed; boundary=changesetresponse_r\r\n\r\n"
                         + "".join("--changesetresponse_r\r\nContent-Type: application/http\r\n"
                                   "Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\n"
                                   f"Content-ID: {i}\r\nDataServiceVersion: 1.0;\r\n\r\n" for i in range(parts))
                         + "--changesetresponse_r--\r\n--batchresponse_r--\r\n").encode()
                self.send_response(202)
                self.send_header("Content-Type", "multipart/mixed; boundary=batchresponse_r")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/devstoreaccount1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def normalized(body: bytes) -> str:
    """A batch body with what differs between any two sends of it (boundaries, dates) made equal."""
    text = re.sub(r"(batch|changeset)_[0-9a-f-]{36}", r"\1_B", body.decode("ascii"))
    return re.sub(r"^(x-ms-date|Date): .*$", r"\1: D", text, flags=re.MULTILINE)


def test_the_encoded_batch_is_byte_for_byte_what_the_sdk_sends():
    """The service reads what the SDK writes; so the encoder writes exactly that (on this SDK version)."""
    from catalog.adapters.azure import merge_changeset

    server = RecordingServer()
    try:
        client = TableClient(endpoint=server.endpoint, table_name="marks",
                             credential=AzureNamedKeyCredential("devstoreaccount1", "a2V5"))
        marks = [{"PartitionKey": "wal03", "RowKey": "20261202T000000000000Z-03abc'de f-00000",
                  "status": "applied", "finished": "2026-12-02T00:00:00+00:00", "n": 5, "neg": -(2 ** 31),
                  "f": 1.5, "t": True, "u": "日本 🙂"},
                 {"PartitionKey": "wal03", "RowKey": "x", "status": "failed", "failed": 2}]
        client.submit_transaction([("upsert", m, {"mode": UpdateMode.MERGE}) for m in marks])
        _, ours = merge_changeset(client.url, "marks", marks, api_version=client.api_version)
        assert normalized(ours) == normalized(server.bodies[0])
    finally:
        server.close()
