#!/usr/bin/env python3
"""Benchmark: `catalog import` streams a large file in bounded memory, and how fast it loads.

    scripts/bootstrap && .venv/bin/python bench/import_memory.py [--records 100000] [--compare 3000]

Not a test: it prints one markdown table and checks one target, the import's peak RSS under 300 MB.

1. Writes --records generated records (~330 bytes of JSON each) to a temporary JSON Lines file.
2. Starts its own Azurite (persisting to a temporary --location: its in-memory mode stalls on
   queue garbage collection) on free ports.
3. Runs `python -m catalog import FILE` in a child process, as an operator would, and reads that
   child's peak RSS from its own rusage (os.wait4), so the parent's memory never counts.
   - default mode: each batch of 99 records is validated, logged to the WAL in one entity-group
     transaction and enqueued, like POST /api/records; the function app applies them later
     (not part of this timing);
   - `--apply` (--compare records): each batch is also applied to the index before the next.
4. Loads --compare records through the seed-compatible `TableCatalogClient.insert`, one call per
   record, in a child process too: the way a script used the library before there was an import.

Rows 2 and 3 do the same work (records logged and applied, queryable when the command returns);
row 1 does the part a client waits for when the function app applies.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Import this checkout's catalog/ and devhost/; and not from bench/ itself, whose http.py (another
# benchmark) would shadow the standard library's http package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from devhost.azurite import Azurite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RSS_LIMIT_MB = 300
INDEX_KEYS, ROW_KEY = "sku,category", "name"
WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()


def generate(path: Path, count: int, seed: int = 7) -> int:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            record = {"sku": f"SKU-{i:08d}", "category": f"category-{i % 97}", "name": f"Product {i}",
                      "price": round(rnd.uniform(1, 1000), 2), "stock": rnd.randrange(10_000),
                      "tags": rnd.sample(WORDS, 3),
                      "description": " ".join(rnd.choice(WORDS) for _ in range(25))}
            f.write(json.dumps(record) + "\n")
    return path.stat().st_size


def run_child(args: list[str], env: dict, workdir: Path) -> tuple[float, int, int, str, str]:
    """(seconds, exit status, peak RSS in bytes, stdout, stderr) of one child process."""
    out, err = workdir / "child.out", workdir / "child.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=o, stderr=e)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return seconds, proc.returncode, usage.ru_maxrss * 1024, out.read_text(), err.read_text()


def client_loop(path: str, count: int) -> None:
    """Child mode: insert the first `count` records of the file one by one through the library."""
    from catalog import TableCatalogClient

    client = TableCatalogClient(env=os.environ)
    done = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if done == count:
                break
            client.insert(json.loads(line))
            done += 1
    print(json.dumps({"accepted": done}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records in the imported file")
    parser.add_argument("--compare", type=int, default=3_000,
                        help="records for the applied import and the TableCatalogClient.insert loop")
    parser.add_argument("--client-loop", nargs=2, metavar=("FILE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_loop:
        client_loop(args.client_loop[0], int(args.client_loop[1]))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp = Path(tmp)
        data = tmp / "records.jsonl"
        size = generate(data, args.records)
        small = tmp / "small.jsonl"
        with open(data, encoding="utf-8") as src, open(small, "w", encoding="utf-8") as dst:
            for _, line in zip(range(args.compare), src, strict=False):
                dst.write(line)
        print(f"generated {args.records:,} records, {size / 1e6:.1f} MB, in {data}", file=sys.stderr)

        azurite = Azurite(tmp / "azurite", log=tmp / "azurite.log").start()
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "AzureWebJobs"))}
            base.update({"AzureWebJobsStorage": azurite.endpoints.connection_string,
                         "CATALOG_INDEX_KEYS": INDEX_KEYS, "CATALOG_ROW_KEY": ROW_KEY})
            rows = []

            def importing(name: str, file: Path, table: str, *extra: str) -> None:
                env = dict(base, CATALOG_TABLE=table)
                cmd = [sys.executable, "-m", "catalog", "import", str(file), "--json", "--no-progress", *extra]
                seconds, code, rss, out, err = run_child(cmd, env, tmp)
                if code != 0:
                    raise SystemExit(f"{name} failed ({code}): {err or out}")
                accepted = json.loads(out)["accepted"]
                rows.append((name, accepted, seconds, rss))
                print(f"{name}: {accepted:,} records in {seconds:.1f}s", file=sys.stderr)

            importing("`catalog import` (logged + enqueued; the app applies)", data, "benchbulk")
            importing("`catalog import --apply` (logged + applied)", small, "benchapply", "--apply")

            env = dict(base, CATALOG_TABLE="benchclient")
            seconds, code, rss, out, err = run_child(
                [sys.executable, str(Path(__file__).resolve()), "--client-loop", str(small), str(args.compare)],
                env, tmp)
            if code != 0:
                raise SystemExit(f"client loop failed ({code}): {err or out}")
            rows.append(("`TableCatalogClient.insert` loop (logged + applied)", json.loads(out)["accepted"],
                         seconds, rss))

            # The bulk import's operations are in the WAL, waiting for the function app.
            status_env = dict(base, CATALOG_TABLE="benchbulk")
            _, code, _, out, err = run_child([sys.executable, "-m", "catalog", "status", "--json"], status_env, tmp)
            pending = json.loads(out)["pending"] if code == 0 else f"status failed: {err}"
        finally:
            azurite.stop()

    print(f"\nAzurite {azurite.endpoints.host}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"import file {size / 1e6:.1f} MB\n")
    print("| load path | records | seconds | records/s | peak RSS (child) |")
    print("|---|---:|---:|---:|---:|")
    for name, count, seconds, rss in rows:
        print(f"| {name} | {count:,} | {seconds:.1f} | {count / seconds:,.0f} | {rss / 2**20:.0f} MiB |")
    bulk_rss = rows[0][3] / 2**20
    print(f"\noperations pending after the bulk import (99 records each): {pending}")
    verdict = "ok" if bulk_rss < RSS_LIMIT_MB else "OVER"
    print(f"peak RSS of the {rows[0][1]:,}-record import: {bulk_rss:.0f} MiB (limit {RSS_LIMIT_MB} MB): {verdict}")
    return 0 if bulk_rss < RSS_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
