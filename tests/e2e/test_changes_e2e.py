"""A restartable consumer of the change feed, as a user runs it: `catalog changes --follow --checkpoint`
reading while 8 clients write through the dev host, stopped (SIGTERM) and started again twice. Its
output holds every accepted write exactly once, in position order."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import requests
from azure.data.tables import TableServiceClient

from catalog.wal import DELETE, PUT, SHARDS, STAMP_END, shard_partition
from tests.e2e.conftest import ROOT, ServedApp
from tests.helpers import wait_until

WRITERS = 8
PER_WRITER = 12


def lines(path) -> list[dict]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wal_entries(storage_connection: str, wal_table: str) -> list[tuple[str, str]]:
    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(wal_table)
    rows = [e for s in range(SHARDS) for e in table.query_entities(
        "PartitionKey eq @pk and RowKey lt @end", parameters={"pk": shard_partition(s), "end": STAMP_END})
        if e.get("kind") in (PUT, DELETE)]
    return sorted((e["RowKey"], "put" if e["kind"] == PUT else "delete") for e in rows)


def test_a_consumer_killed_and_restarted_twice_gets_every_write_once_in_order(storage_connection, tmp_path):
    app = ServedApp(storage_connection, tmp_path / "host.log", CATALOG_SETTLE_SECONDS="1")
    out, checkpoint = tmp_path / "changes.jsonl", tmp_path / "pos.txt"
    consumers: list[subprocess.Popen] = []

    def start_consumer() -> subprocess.Popen:
        with open(out, "ab") as sink:  # each run appends, as `>> changes.jsonl` would
            # Run where there is no local.settings.json: the app's settings come from the environment.
            proc = subprocess.Popen([sys.executable, "-m", "catalog", "changes", "--follow", "--checkpoint",
                                     str(checkpoint)], cwd=tmp_path, env={**app.env, "PYTHONPATH": str(ROOT)},
                                    stdout=sink, stderr=subprocess.PIPE)
        consumers.append(proc)
        return proc

    accepted: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        with requests.Session() as s:
            for i in range(PER_WRITER):
                if i % 4 == 3:  # a delete of what this writer wrote first
                    resp = s.delete(app.url("records"), params={"sku": f"w{w}-0"}, timeout=30)
                elif i % 4 == 2:
                    resp = s.post(app.url("records"), json=[{"sku": f"w{w}-{i}-{j}", "category": "c", "name": "n"}
                                                            for j in range(3)], timeout=30)
                else:
                    resp = s.post(app.url("records"), json={"sku": f"w{w}-{i}", "category": "c", "name": "n"},
                                  timeout=30)
                assert resp.status_code in (200, 202), resp.text
                if resp.json()["operation"]:
                    with lock:
                        accepted.append(resp.json()["operation"])

    try:
        consumer = start_consumer()
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for _ in range(2):
            seen = len(lines(out))
            wait_until(lambda s=seen, c=consumer: len(lines(out)) > s or c.poll() is not None, timeout=60,
                       what="the consumer to write more lines")
            assert consumer.poll() is None, consumer.stderr.read().decode() if consumer.stderr else ""
            consumer.send_signal(signal.SIGTERM)  # stopped between two lines, its checkpoint kept
            assert consumer.wait(timeout=30) == 0, consumer.stderr.read().decode() if consumer.stderr else ""
            consumer = start_consumer()
        for t in threads:
            t.join(timeout=120)
        expected = wal_entries(storage_connection, f"{app.table}wal")
        wait_until(lambda: len(lines(out)) >= len(expected), timeout=60, what="the consumer to catch up")
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
    finally:
        for proc in consumers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        app.stop()
    got = lines(out)
    positions = [c["position"] for c in got]
    assert positions == sorted(set(positions)), "a change came twice or out of order"
    assert [(c["position"], c["kind"]) for c in got] == expected  # every accepted write, once
    assert {c["operation"] for c in got} == set(accepted)
    assert checkpoint.read_text().strip() >= positions[-1]
    assert len(consumers) == 3
