#!/usr/bin/env python3
"""Benchmark: reading the change feed, against a plain azure-data-tables scan of the same WAL entities.

    scripts/bootstrap && .venv/bin/python bench/changes.py [--records 10000] [--rounds 3]

A benchmark, not a test. One Azurite (persisting to a temporary --location); a catalog whose WAL
holds `--records` puts, written as operations of 50 records (each operation lands in one of the
16 WAL shards, at random, as requests spread them). Settle window 0, so every entry is final.

Contenders, interleaved round by round in alternating order (Azurite's speed drifts):
- ours over HTTP: `GET /api/changes?limit=1000` to the dev host (`python -m catalog serve`), page
  after page from the beginning with `after=<next>`, until a page comes back empty; every item
  parsed (the change as JSON, its record decoded);
- ours in process: `CatalogService.changes` (`ChangeFeed.page`) the same way, its storage requests
  and entities read counted (the SDK transport wrapped);
- plain: the same entities read with the SDK the best way it allows for an ordered stream: each
  shard's partition in one paged query (`query_entities("PartitionKey eq @pk")`, 1,000 a page), the
  16 shards merged by RowKey (the order the feed promises), every entity materialised.

Target (the change-feed issue): ours over HTTP at least 50% of plain's rate.
"""
from __future__ import annotations

import argparse
import heapq
import importlib.util
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_http", ROOT / "bench" / "http.py")
assert _spec is not None and _spec.loader is not None
bench_http = importlib.util.module_from_spec(_spec)
sys.modules["bench_http"] = bench_http
_spec.loader.exec_module(bench_http)  # its helpers: the host process, HTTP sessions, request counts

from azure.data.tables import TableServiceClient  # noqa: E402

from catalog.bootstrap import build_service  # noqa: E402
from catalog.settings import Settings  # noqa: E402
from catalog.wal import SHARDS, shard_partition  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402

say = bench_http.say


def over_http(session, url: str) -> int:
    n, after = 0, None
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        page = session.get(url, params=params, timeout=120).json()
        n += len(page["items"])
        after = page["next"]
        if not page["items"]:
            return n


def in_process(service) -> int:
    n, after = 0, None
    while True:
        page = service.changes(after=after, limit=1000)
        n += len(page.items)
        after = page.next
        if not page.items:
            return n


def plain_scan(table) -> int:
    def shard(s: int):
        for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": shard_partition(s)},
                                      results_per_page=1000):
            if e.get("kind") in ("put", "del"):
                yield e["RowKey"], dict(e)
    n = 0
    for _ in heapq.merge(*(shard(s) for s in range(SHARDS)), key=lambda t: t[0]):
        n += 1
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rng = random.Random(20261207)
    with tempfile.TemporaryDirectory(prefix="bench-changes-") as tmp:
        azurite = Azurite(Path(tmp) / "azurite", log=Path(tmp) / "azurite.log")
        azurite.start()
        host = None
        try:
            cs = azurite.endpoints.connection_string
            table = "benchfeed"
            env = {"AzureWebJobsStorage": cs, "CATALOG_TABLE": table, "CATALOG_INDEX_KEYS": "sku,category",
                   "CATALOG_ROW_KEY": "name", "CATALOG_SETTLE_SECONDS": "0"}
            service = build_service(Settings.from_env(env), queue=bench_http.CapturingQueue(),
                                    poison_queue=bench_http.CapturingQueue())
            started = time.perf_counter()
            for at in range(0, args.records, 50):
                service.shard = rng.randrange(SHARDS)
                service.submit([{"sku": f"S-{i:06d}", "category": f"c{i % 40}", "name": f"item {i}",
                                 "note": "a change of ordinary size " * 6} for i in range(at, at + 50)])
            say(f"wrote {args.records} records as {args.records // 50} operations in "
                f"{time.perf_counter() - started:.1f}s")
            host = bench_http.HostProcess(cs, table, queues=False, log_dir=Path(tmp), label="feed")
            host.env["CATALOG_SETTLE_SECONDS"] = "0"
            host.start()
            http = bench_http.session()
            url = host.url("changes")
            plain = TableServiceClient.from_connection_string(cs).get_table_client(service.wal.table)
            # warm-up: connections and caches, not timed
            assert over_http(http, url) == args.records and plain_scan(plain) == args.records
            times: dict[str, list[float]] = {"http": [], "plain": [], "in process": []}
            for r in range(args.rounds):
                order = ["http", "plain", "in process"] if r % 2 == 0 else ["in process", "plain", "http"]
                for name in order:
                    t0 = time.perf_counter()
                    got = {"http": lambda: over_http(http, url), "plain": lambda: plain_scan(plain),
                           "in process": lambda: in_process(service)}[name]()
                    times[name].append(time.perf_counter() - t0)
                    assert got == args.records, (name, got)
            with bench_http.RequestCounter() as counter:
                _, requests = counter.count(lambda: in_process(service))
                _, plain_requests = counter.count(lambda: plain_scan(plain))
        finally:
            if host is not None:
                host.stop()
            azurite.stop()

    rate = {name: args.records / statistics.median(t) for name, t in times.items()}
    print()
    print(f"{args.records} changes (WAL puts in {args.records // 50} operations of 50 over 16 shards), "
          f"{args.rounds} interleaved rounds, median")
    print()
    print("| reader | changes/s | s per 10,000 | storage requests |")
    print("|---|---:|---:|---:|")
    for name, label, reqs in (("http", "ours: GET /api/changes?limit=1000 (dev host)", None),
                              ("in process", "ours: ChangeFeed.page, in process", sum(requests.values())),
                              ("plain", "plain: 16 partition scans merged by RowKey", sum(plain_requests.values()))):
        secs = statistics.median(times[name]) * 10000 / args.records
        print(f"| {label} | {rate[name]:.0f} | {secs:.2f} | {reqs if reqs is not None else '-'} |")
    ratio = rate["http"] / rate["plain"]
    print()
    print(f"- GET /changes / plain scan = **{ratio:.0%}** (target >= 50%); "
          f"in process {rate['in process'] / rate['plain']:.0%}")
    print(f"- storage requests per 1,000 changes: ours {1000 * sum(requests.values()) / args.records:.1f}, "
          f"plain {1000 * sum(plain_requests.values()) / args.records:.1f}")
    return 0 if ratio >= 0.5 else 1



if __name__ == "__main__":
    sys.exit(main())
