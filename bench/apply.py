#!/usr/bin/env python3
"""Benchmark: how fast the catalog applies a backlog, against a plain azure-data-tables program.

    scripts/bootstrap && .venv/bin/python bench/apply.py [--records 5000] [-h]

A benchmark, not a test: one Azurite (persisting to a temporary --location), the dev host as a
subprocess (`python -m catalog serve`, as bench/http.py starts it), index keys `category,sku`
where every record shares one category and has its own sku (so a record is one entity in a
shared partition of `--records` entities and one in a partition of its own), row key `name`.

Rows (each a ratio measured in this run):
(a) `POST /api/manage/recover` of a backlog of `--records` records posted in 1,000-record requests
    (the queue trigger off), against the plain program writing the same index entities;
(b) the same kind of backlog drained by the queue trigger of a fresh host, against the same plain;
(c) the records/s of (a) against the records/s 8 clients posting one record per request get
    accepted by the same host (target >= 1.0: a backlog built by ordinary traffic drains faster
    than it builds);
(d) a backlog of `--records` updates of existing records, recovered, against the plain program
    replacing the same entities;
(e) /api/health p50 with `--records` one-record operations pending, against idle (at most 1.5x).

The plain program (the physical limit of this design): the very same entities (keys, properties,
sizes; each record's version in its history included, created also when the index entities are
replaced), written the best way the SDK allows: the shared partition as entity-group transactions of
100 (`submit_transaction`, creates or replaces), every other entity as one `create_entity` /
`update_entity`, from as many threads as the catalog may have index writes in flight
(CATALOG_APPLY_CONCURRENCY, shared by every unit it applies). It runs right before and right
after the catalog's run it is compared with (fresh tables for creates), and the two are
averaged, so drift in the machine hits both.

Storage requests per 1,000 records of each path are counted in this process on the service code
(the SDK transport wrapped), on a separate small catalog.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_http", ROOT / "bench" / "http.py")
assert _spec is not None and _spec.loader is not None
bench_http = importlib.util.module_from_spec(_spec)
sys.modules["bench_http"] = bench_http
_spec.loader.exec_module(bench_http)  # its helpers: the host process, HTTP clients, request counts

from azure.data.tables import TableServiceClient, UpdateMode  # noqa: E402
from azure.storage.queue import QueueClient  # noqa: E402

from catalog import codec  # noqa: E402
from catalog.bootstrap import build_service  # noqa: E402
from catalog.index import history_entity  # noqa: E402
from catalog.keys import record_keys  # noqa: E402
from catalog.settings import DEFAULT_APPLY_CONCURRENCY, Schema, Settings  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402

INDEX_KEYS = ("category", "sku")
SCHEMA = Schema(INDEX_KEYS, "name")
BULK = 1000
say = bench_http.say


def records(n: int, prefix: str, version: int = 0) -> list[dict]:
    return [{"category": "big", "sku": f"{prefix}-{i:05d}", "name": f"item {i:05d}", "price": i + version,
             "version": version, "note": "x" * 80} for i in range(n)]


def host(cs: str, table: str, *, queues: bool, log_dir: Path, label: str):
    h = bench_http.HostProcess(cs, table, queues=queues, log_dir=log_dir, label=label)
    h.env["CATALOG_INDEX_KEYS"] = ",".join(INDEX_KEYS)
    return h.start()


def post_bulk(h, recs: list[dict]) -> list[str]:
    bodies = [json.dumps(recs[i:i + BULK]).encode() for i in range(0, len(recs), BULK)]
    return bench_http.run_clients(h.url("records"), bodies, clients=2).operations


def recover(h) -> tuple[float, dict]:
    with bench_http.session() as s:
        started = time.perf_counter()
        r = s.post(h.url("manage/recover"), timeout=600)
        took = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"recover answered {r.status_code}: {r.text[:300]}")
    return took, r.json()


def health_p50(h, n: int = 25) -> float:
    times = []
    with bench_http.session() as s:
        s.get(h.url("health"), timeout=60)
        for _ in range(n):
            started = time.perf_counter()
            assert s.get(h.url("health"), timeout=60).status_code == 200
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def index_entities(recs: list[dict], stamp: str) -> list[dict]:
    """Exactly what the materializer writes for these records (catalog.keys, catalog.codec): the
    index entities, and each record's version in its history (catalog.index.history_entity), which
    are created even when the index entities are replaced (a new version is a new row)."""
    out = []
    for r in recs:
        keys = record_keys(SCHEMA, r)
        data = codec.dumps(r)
        props = {"s": stamp, "x": False, **codec.chunk_properties(data)}
        out += [{"PartitionKey": pk, "RowKey": keys.row_key, **props} for pk in keys.partition_keys]
        out.append({**history_entity(keys, stamp, "put", data), HISTORY: True})
    return out


HISTORY = "__history"  # marks a history row in index_entities: always created, never replaced


def strip(entity: dict) -> dict:
    return {k: v for k, v in entity.items() if k != HISTORY}


class Plain:
    """The plain azure-data-tables program: transactions of 100 where entities share a partition,
    one request per entity elsewhere, `threads` requests in flight."""

    def __init__(self, cs: str, threads: int):
        self.cs = cs
        self.threads = threads

    def write(self, table: str, entities: list[dict], *, replace: bool) -> float:
        # A new client per run: Azurite closes idle keep-alive connections, and the SDK does not
        # retry a create (POST) on a connection that turns out closed.
        service = TableServiceClient.from_connection_string(self.cs)
        client = service.get_table_client(table)
        if not replace:
            service.create_table(table)
        else:
            next(iter(client.list_entities(results_per_page=1)), None)  # opens a connection
        by_pk: dict[str, list[dict]] = {}
        for e in entities:
            by_pk.setdefault(e["PartitionKey"], []).append(e)
        work = []
        for group in by_pk.values():
            if len(group) == 1:
                work.append(group)
            else:
                work += [group[i:i + 100] for i in range(0, len(group), 100)]
        mode = {"mode": UpdateMode.REPLACE}

        def one(batch: list[dict]) -> None:
            if len(batch) > 1:
                client.submit_transaction([("update", e, mode) if replace and HISTORY not in e else ("create", strip(e))
                                           for e in batch])
            elif replace and HISTORY not in batch[0]:
                client.update_entity(batch[0], mode=UpdateMode.REPLACE)
            else:
                client.create_entity(strip(batch[0]))
        started = time.perf_counter()
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, work))
        return time.perf_counter() - started


def count_paths(cs: str, n: int) -> dict[str, Counter]:
    """Storage requests of recovering a backlog of n records (n/BULK bulk operations), fresh and as updates."""
    table = "cnt" + str(int(time.time() * 1000) % 10**8)
    env = {"AzureWebJobsStorage": cs, "CATALOG_TABLE": table, "CATALOG_INDEX_KEYS": ",".join(INDEX_KEYS),
           "CATALOG_ROW_KEY": "name", "CATALOG_SWEEP_SCHEDULE": bench_http.NEVER}
    service = build_service(Settings.from_env(env), queue=bench_http.CapturingQueue(),
                            poison_queue=bench_http.CapturingQueue())
    out: dict[str, Counter] = {}
    with bench_http.RequestCounter() as counter:
        for label, version in (("recover, new records", 0), ("recover, updates", 1)):
            recs = records(n, "C", version)
            for i in range(0, n, BULK):
                service.submit(recs[i:i + BULK])
            _, out[label] = counter.count(service.recover)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=5000, help="records per backlog (default 5000)")
    p.add_argument("--clients", type=int, default=8, help="single-record ingest clients for (c) (default 8)")
    args = p.parse_args()
    n = args.records
    threads = DEFAULT_APPLY_CONCURRENCY
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        tmpdir = Path(tmp)
        azurite = Azurite(tmpdir / "azurite", log=tmpdir / "azurite.log")
        azurite.start()
        hosts = []
        try:
            cs = azurite.endpoints.connection_string
            plain = Plain(cs, threads)
            say(f"Azurite up; {n} records per backlog; plain program with {threads} threads")
            a = host(cs, "applya", queues=False, log_dir=tmpdir, label="a")
            hosts.append(a)
            post_bulk(a, records(BULK, "W"))  # warm-up: clients, tables, one recover
            recover(a)
            plain.write("plainwarm", index_entities(records(200, "W"), "20250101T000000000000Z-00aaaaaaaaaa-00000"),
                        replace=False)

            # (c) ordinary traffic: one record per request from 8 clients, and (e) health with it pending
            singles = [json.dumps(r).encode() for r in records(n, "P")]
            ingest = bench_http.run_clients(a.url("records"), singles, clients=args.clients)
            ingest_rate = n / ingest.elapsed
            say(f"(c) {args.clients} clients, one record per request: {ingest_rate:.0f} records/s accepted")
            pending = health_p50(a)
            took, view = recover(a)
            say(f"    recover of those {n} one-record operations: {took:.2f} s ({n / took:.0f} records/s) {view}")
            idle = health_p50(a)
            say(f"(e) /health p50: {pending * 1000:.1f} ms with {n} pending, {idle * 1000:.1f} ms idle")

            # (a) recover of a bulk backlog, between two plain runs of the same entities
            fresh = records(n, "S")
            plain_before = plain.write("plaina1", index_entities(fresh, "20250101T000000000000Z-00aaaaaaaaaa-00000"),
                                       replace=False)
            post_bulk(a, fresh)
            rec_a, view_a = recover(a)
            plain_after = plain.write("plaina2", index_entities(fresh, "20250101T000000000000Z-00aaaaaaaaaa-00000"),
                                      replace=False)
            plain_a = (plain_before + plain_after) / 2
            say(f"(a) recover {n} new records: {rec_a:.2f} s {view_a}; plain {plain_before:.2f} / {plain_after:.2f} s")

            # (d) updates of those records, between two plain runs replacing the same entities
            updated = records(n, "S", 1)
            stamp = "20250102T000000000000Z-00aaaaaaaaaa-00000"
            plain_d1 = plain.write("plaina1", index_entities(updated, stamp), replace=True)
            post_bulk(a, updated)
            rec_d, view_d = recover(a)
            plain_d2 = plain.write("plaina2", index_entities(updated, stamp), replace=True)
            plain_d = (plain_d1 + plain_d2) / 2
            say(f"(d) recover {n} updates: {rec_d:.2f} s {view_d}; plain {plain_d1:.2f} / {plain_d2:.2f} s")
            a.stop()
            hosts.remove(a)

            # (b) the queue trigger drains a bulk backlog on a fresh host
            b = host(cs, "applyb", queues=False, log_dir=tmpdir, label="b-ingest")
            hosts.append(b)
            post_bulk(b, records(n, "Q"))
            b.stop()
            hosts.remove(b)
            plain_b1 = plain.write("plainb1", index_entities(records(n, "Q"), stamp), replace=False)
            drainer = host(cs, "applyb", queues=True, log_dir=tmpdir, label="b-drain")
            hosts.append(drainer)
            queue = QueueClient.from_connection_string(cs, "applyb-wal")
            drain_b, _ = bench_http.drain(drainer, queue, timeout=600)
            plain_b2 = plain.write("plainb2", index_entities(records(n, "Q"), stamp), replace=False)
            plain_b = (plain_b1 + plain_b2) / 2
            say(f"(b) queue trigger drain of {n} records: {drain_b:.2f} s; plain {plain_b1:.2f} / {plain_b2:.2f} s")
            drainer.stop()
            hosts.remove(drainer)

            counts = count_paths(cs, 1000)
        finally:
            for h in hosts:
                h.stop()
            azurite.stop()

    entities = 3 * n  # per record: 2 index entities and its version in the history, for both programs
    rows = [
        ("a", f"recover {n} new records (bulk backlog)", f"{n / rec_a:.0f} rec/s = {entities / rec_a:.0f} ent/s",
         f"plain {entities / plain_a:.0f} ent/s", plain_a / rec_a, ">= 0.70"),
        ("b", f"queue trigger drains {n} records (bulk)", f"{n / drain_b:.0f} rec/s = {entities / drain_b:.0f} ent/s",
         f"plain {entities / plain_b:.0f} ent/s", plain_b / drain_b, ">= 0.70"),
        ("c", "drain of (a) vs 8-client single-record ingest", f"{n / rec_a:.0f} rec/s drained",
         f"{ingest_rate:.0f} rec/s accepted", (n / rec_a) / ingest_rate, ">= 1.0"),
        ("d", f"recover {n} updates of existing records", f"{entities / rec_d:.0f} ent/s",
         f"plain replaces {entities / plain_d:.0f} ent/s", plain_d / rec_d, ">= 0.50"),
        ("e", f"/health p50, {n} pending vs idle", f"{pending * 1000:.1f} ms", f"{idle * 1000:.1f} ms idle",
         pending / idle, "<= 1.5"),
    ]
    print("\n| # | measurement | catalog | reference | ratio | target |\n|---|---|---|---|---:|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.2f} | {row[5]} |")
    print("\nStorage requests per 1,000 records (in-process, same service code):")
    for label, c in counts.items():
        print(f"- {label}: {bench_http.describe_counts(c)}")
    print("- plain program, new or updated: 10 transactions (the shared partition) + 1,000 single requests (one "
          "sku each) + 10 transactions of history rows (100 versions each, one shard's partition) = 1,020")
    return 0


if __name__ == "__main__":
    sys.exit(main())
