"""What the settle window rests on: a WAL write is sent at most twice with a server timeout, and an
append starts a write only while it can still land within the write deadline of its stamp's time."""
from __future__ import annotations

import http.server
import threading
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from catalog import codec, settings
from catalog.adapters.azure import CLIENT_OPTIONS, AzureTableStore
from catalog.adapters.memory import MemoryTableStore
from catalog.errors import TransientStorageError
from catalog.wal import SHARDS, WRITE_BOUND, WRITE_DEADLINE, PendingEntry, Wal, shard_partition
from tests.helpers import StepClock, unique


def test_the_settle_window_is_the_write_deadline_plus_clock_skew():
    # The argument of settings.py, as numbers: every write lands within WRITE_BOUND of its start,
    # a write starts only while its stamp is younger than WRITE_DEADLINE - WRITE_BOUND.
    assert settings.WRITE_BOUND == 1 * (5 + 12 + 1) + 5 + 10 == 33
    assert WRITE_DEADLINE - WRITE_BOUND == timedelta(seconds=12)
    assert settings.DEFAULT_SETTLE_SECONDS == 45 + 5
    assert settings.WAL_READ_TIMEOUT > settings.SERVER_TIMEOUT
    assert CLIENT_OPTIONS["connection_timeout"] == settings.CONNECT_TIMEOUT


class Busy(http.server.BaseHTTPRequestHandler):
    """Answers every request 503 (server busy), counting them."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def _busy(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Busy.seen.append(self.requestline)
        body = b'{"odata.error":{"code":"ServerBusy","message":{"value":"busy"}}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET = do_PATCH = _busy

    def log_message(self, *args):
        pass


@pytest.fixture
def busy_store():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Busy.seen = []
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={'a' * 88};"
            f"TableEndpoint=http://127.0.0.1:{server.server_port}/devstoreaccount1;")
    options = dict(CLIENT_OPTIONS, retry_backoff_factor=0.01)  # the count is the point, not the wait
    yield AzureTableStore(TableServiceClient.from_connection_string(conn, **options))
    server.shutdown()


def test_a_wal_write_is_sent_at_most_twice_other_writes_four_times(busy_store):
    entity = {"PartitionKey": "p", "RowKey": "r"}
    with pytest.raises(TransientStorageError):
        busy_store.insert("t", entity, timeout=settings.SERVER_TIMEOUT)
    assert len(Busy.seen) == settings.WAL_WRITE_ATTEMPTS == 2
    assert "timeout=10" in Busy.seen[0]  # the server-side bound goes with it
    Busy.seen.clear()
    with pytest.raises(TransientStorageError):
        busy_store.write_batch("t", [entity], [], timeout=settings.SERVER_TIMEOUT)
    assert len(Busy.seen) == 2
    Busy.seen.clear()
    with pytest.raises(TransientStorageError):
        busy_store.insert("t", entity)  # an index write: the client's usual retries
    assert len(Busy.seen) == 1 + CLIENT_OPTIONS["retry_total"]


def entries(wal: Wal, op_id: str, n: int) -> list[dict]:
    return wal.entry_entities(op_id, [PendingEntry("put", codec.dumps({"i": i})) for i in range(n)])


def test_an_append_too_old_to_land_in_time_writes_nothing():
    clock = StepClock(step=timedelta(milliseconds=1))
    wal = Wal(MemoryTableStore(), unique("w"), clock=clock)
    wal.create()
    op_id, shard = wal.new_operation_id()
    clock.now += WRITE_DEADLINE - WRITE_BOUND + timedelta(seconds=1)  # e.g. a claim or a queue that took long
    with pytest.raises(TransientStorageError, match="deadline"):
        wal.append(entries(wal, op_id, 3))
    assert list(wal.store.query(wal.table, shard_partition(shard))) == []


def test_a_bulk_append_stops_between_transactions_once_its_deadline_is_near():
    clock = StepClock(step=timedelta(milliseconds=1))
    store = MemoryTableStore()
    wal = Wal(store, unique("w"), clock=clock)
    wal.create()
    op_id, shard = wal.new_operation_id()
    real = store.insert_batch

    def slow(table, batch, **kw):  # the first transaction takes 20 s
        real(table, batch, **kw)
        clock.now += timedelta(seconds=20)
    store.insert_batch = slow
    rows = entries(wal, op_id, 150) + [wal.header_entity(op_id, 150, "put")]
    with pytest.raises(TransientStorageError):
        wal.append(rows)
    written = [e["RowKey"] for s in range(SHARDS) for e in store.query(wal.table, shard_partition(s))]
    assert len(written) == 100 and op_id not in written  # cut short: no header, so never accepted
