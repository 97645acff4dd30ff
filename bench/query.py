#!/usr/bin/env python3
"""Benchmark: the query planner, on one local Azurite, against a plain azure-data-tables query.

    scripts/bootstrap && .venv/bin/python bench/query.py [--records 5000] [--rounds 60]

A benchmark, not a test. One catalog (index keys `category,sku`, row key `name`) holds
`--records` records that all share `category=big`, each with its own sku: one partition of
`--records` entities and `--records` partitions of one. Every round picks a random sku X and asks
each contender once, in an order that rotates from round to round (Azurite's speed drifts as it
runs; interleaving makes the drift hit every contender alike):

- `GET /api/records?category=big&sku=X` and `GET /api/records?sku=X&category=big`, over HTTP, to
  the dev host (`python -m catalog serve`): the two orders of one question (target: p50 ratio <= 1.5);
- `GET /api/records?sku=X` over HTTP (the single-key query, for scale);
- in this process: ours `CatalogService.query({"sku": X})` (what `TableCatalogClient.query` runs)
  against the plain program, `TableClient.query_entities("PartitionKey eq @pk")` on the same
  index table's partition, the records materialised as dicts (target: p50 ratio <= 1.3);
- in this process, a reference row: the old plan, reading the first filter's partition
  (`category=big`, as before the planner) for `?category=big&sku=X`, to show what planning saves.

The HTTP requests and the entities each in-process contender reads from storage are counted
(the store wrapped, the SDK transport wrapped) and printed per query.

Azurite fact that shapes the numbers (3.37.0): it evaluates every query against the whole table
collection, so any query costs time in proportion to the table, not to the partition; a planned
query with two index keys sends two queries per round (concurrently, but Azurite is one thread).
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import tempfile
import threading
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
from catalog.keys import partition_key  # noqa: E402
from catalog.planner import ReadPlan  # noqa: E402
from catalog.settings import Settings  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402


class EntityReads:
    """Counts the entities a store's queries return (the planner's cost, in entities)."""

    def __init__(self, inner):
        self.inner, self.entities = inner, 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def query_page(self, *args, **kwargs):
        page, resume = self.inner.query_page(*args, **kwargs)
        with self._lock:
            self.entities += len(page)
        return page, resume


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        azurite = Azurite(Path(tmp) / "azurite", log=Path(tmp) / "azurite.log")
        azurite.start()
        host = None
        try:
            conn = azurite.endpoints.connection_string
            table = "benchquery"
            settings = Settings.from_env({"AzureWebJobsStorage": conn, "CATALOG_TABLE": table,
                                          "CATALOG_INDEX_KEYS": "category,sku", "CATALOG_ROW_KEY": "name"})
            svc = build_service(settings)
            records = [{"sku": f"S-{i:05d}", "category": "big", "name": f"item {i:05d}", "price": i,
                        "description": "a record of ordinary size " * 8} for i in range(args.records)]
            started = time.perf_counter()
            for at in range(0, len(records), 1000):
                svc.submit(records[at:at + 1000], apply_now=True)
            bench_http.say(f"loaded {args.records} records in {time.perf_counter() - started:.1f}s")
            reads = EntityReads(svc.index.store)
            svc.index.store = reads
            plain = TableServiceClient.from_connection_string(conn).get_table_client(table)
            big = partition_key("category", "big")

            host = bench_http.HostProcess(conn, table, queues=False, log_dir=Path(tmp), label="query")
            host.env.update({"CATALOG_WAL_TABLE": settings.wal_table, "CATALOG_QUEUE": settings.queue,
                             "CATALOG_INDEX_KEYS": "category,sku"})
            host.start()
            http = bench_http.session()

            def over_http(params: str) -> None:
                resp = http.get(host.url(f"records?{params}"), timeout=60)
                resp.raise_for_status()
                assert len(resp.json()["items"]) == 1

            def ours(sku: str) -> None:
                assert len(svc.query({"sku": sku}).items) == 1

            def plain_query(sku: str) -> None:
                pk = partition_key("sku", sku.casefold())
                got = [dict(e) for e in plain.query_entities("PartitionKey eq @pk", parameters={"pk": pk})]
                assert len(got) == 1

            def old_plan(sku: str) -> None:
                plan = ReadPlan((big,), (("category", "big"), ("sku", sku.casefold())))
                assert len(svc.index.reader.page(plan, limit=100).items) == 1

            contenders = {
                "HTTP ?category=big&sku=X": lambda x: over_http(f"category=big&sku={x}"),
                "HTTP ?sku=X&category=big": lambda x: over_http(f"sku={x}&category=big"),
                "HTTP ?sku=X": lambda x: over_http(f"sku={x}"),
                "ours query({sku: X})": ours,
                "plain query_entities(PartitionKey eq pk)": plain_query,
                "old plan: first filter's partition (category=big)": old_plan,
            }
            in_process = {"ours query({sku: X})", "old plan: first filter's partition (category=big)"}
            timings: dict[str, list[float]] = {name: [] for name in contenders}
            entities: dict[str, list[int]] = {name: [] for name in in_process}
            requests: dict[str, list[int]] = {name: [] for name in contenders if not name.startswith("HTTP")}
            names = list(contenders)
            for name in names:  # warm-up: connections, caches; not timed
                contenders[name](records[0]["sku"])
            with bench_http.RequestCounter() as counter:
                for r in range(args.rounds):
                    sku = rng.choice(records)["sku"]
                    order = names[r % len(names):] + names[:r % len(names)]
                    for name in order:
                        reads.entities = 0
                        counter.counts.clear()
                        counter.active = not name.startswith("HTTP")
                        t0 = time.perf_counter()
                        contenders[name](sku)
                        timings[name].append(time.perf_counter() - t0)
                        counter.active = False
                        if name in in_process:
                            entities[name].append(reads.entities)
                        if name in requests:
                            requests[name].append(sum(counter.counts.values()))
            # The planned query's cost in entities, in this process (the dev host's are the same code).
            reads.entities = 0
            svc.query({"category": "big", "sku": records[7]["sku"]})
            planned_entities = reads.entities
        finally:
            if host is not None:
                host.stop()
            azurite.stop()

    p50 = {name: p50_ms(v) for name, v in timings.items()}
    print()
    print(f"{args.records} records in one partition (category=big), each with its own sku; {args.rounds} rounds, "
          "contenders interleaved in rotating order")
    print()
    print("| contender | p50 ms | p90 ms | storage requests / query | entities read / query |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        p90 = sorted(timings[name])[int(0.9 * (len(timings[name]) - 1))] * 1000
        req = f"{statistics.mean(requests[name]):.1f}" if name in requests else "-"
        ent = f"{statistics.mean(entities[name]):.1f}" if name in entities else (
            f"{planned_entities}" if "category=big&sku" in name or "sku=X&category" in name else "-")
        print(f"| {name} | {p50[name]:.2f} | {p90:.2f} | {req} | {ent} |")
    order_ratio = p50["HTTP ?category=big&sku=X"] / p50["HTTP ?sku=X&category=big"]
    single_ratio = p50["ours query({sku: X})"] / p50["plain query_entities(PartitionKey eq pk)"]
    saved = p50["old plan: first filter's partition (category=big)"] / p50["HTTP ?category=big&sku=X"]
    print()
    print(f"- p50(?category=big&sku=X) / p50(?sku=X&category=big) = **{order_ratio:.2f}** (target <= 1.5)")
    print(f"- p50(ours single-key query) / p50(plain partition query) = **{single_ratio:.2f}** (target <= 1.3)")
    print(f"- the old plan (first filter's partition, in process) / the planned query over HTTP = {saved:.1f}x")
    ok = order_ratio <= 1.5 and single_ratio <= 1.3
    print(f"- targets {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
