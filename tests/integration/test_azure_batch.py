"""The status marks' batch encoding (adapters.azure.merge_changeset) on Azurite, and its fallback."""
import logging

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


class RefusingProxy:
    """Forwards every request to Azurite unchanged, except that it answers the first `$batch` 400,
    as Azure answers a batch it cannot parse (Azurite answers such batches 500 or accepts them)."""

    def __init__(self, target_port: int):
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
                    reply = b'{"odata.error":{"code":"InvalidInput","message":{"value":"refused"}}}'
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
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


def test_a_refused_encoding_falls_back_to_the_sdk_and_still_writes(azurite, caplog):
    from azure.data.tables import TableServiceClient

    from catalog.adapters.azure import CLIENT_OPTIONS, AzureTableStore
    from devhost.azurite import DEV_ACCOUNT, DEV_KEY

    proxy = RefusingProxy(azurite.endpoints.table_port)
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
