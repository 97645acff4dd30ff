#!/usr/bin/env python3
"""Benchmark: this library's TableCatalogClient against the seed (az_table_catalog 1.0.1) and against
plain azure-data-tables calls doing the same index writes and reads, on one local Azurite.

    scripts/bootstrap && .venv/bin/python bench/library.py [--records N] [--queries M] [--threads T]

This is a benchmark, not a test: it prints one markdown table and the two target ratios
(our inserts/s / seed inserts/s >= 2x; our query p50 / plain query p50 <= 1.3x).

What each contender does per insert (2 index keys + 1 row key; counted, not assumed: every HTTP
request any Azure SDK client sends is counted by wrapping the transport, and the table prints the
measured requests per insert/query, broken down by kind):

- ours   `catalog.TableCatalogClient.insert(record)` (applied before it returns): 1 insert of
         the operation's one WAL entity (entry and status together), 1 create_entity per index key
         into the index table (a fresh record: no conflict, so no read and no conditional replace);
         the `applied` status marks go out in the background as entity-group transactions of up to
         100 (one WAL shard per client); each timed round ends with close(), which writes the
         marks still buffered, so they are timed and counted. = 1 + index keys requests (3 here)
         + about 1/40 (one transaction per round of 40 inserts). Its storage
         clients use catalog.adapters.azure's transport (StorageSession: requests handed straight to
         requests' adapter); the other contenders use the SDK's default transport.
- seed   `az_table_catalog.TableCatalogClient.insert(record)`: create_entity into the WAL,
         get_entity of the checkpoint, a query of the WAL after the checkpoint (one entry when
         single-threaded), 1 create_entity per index key, 1 upsert of the checkpoint per entry
         replayed. = 4 + index keys requests (6 here) single-threaded; more with threads, where
         concurrent inserts replay each other's entries.
- plain  azure-data-tables only: 1 upsert_entity (replace) per index key into one table, the
         record's fields as entity properties. = index keys requests (2 here): the floor any
         fan-out index pays.
- plain+wal (a reference row, inserts only): 1 create_entity of the record into a WAL table, then
         plain's upserts. = 1 + index keys requests (3 here): the least a log-then-fan-out insert
         can do with the SDK's default transport.

Queries: each contender is asked for one index value whose partition holds exactly --per-partition
records (checked on every query): ours `client.query({field: value})`, seed the same, plain one
`query_entities("PartitionKey eq @pk", parameters=...)`, each materialising the records as dicts.

Fairness: identical records for every contender (flat scalar fields, since the seed cannot store
lists or objects; about 360 bytes of JSON each), fresh tables per contender (and per phase), a
warm-up per contender that is not timed or counted, and contenders interleaved in rounds with a
rotating order so that Azurite's drift (its LokiJS store grows and autosaves to --location) hits
them alike. Queries interleave one by one. Timings use time.perf_counter.

Azurite facts that shape the numbers (3.37.0, see node_modules/azurite/dist/src/table/persistence/
LokiTableMetadataStore.js): point reads/writes use an index on PartitionKey, but every query
(`queryTableEntities`) filters the whole table collection with a JavaScript predicate, so query
time grows with the number of entities in the table, not the partition; and Azurite is a single
Node.js thread, so more client threads mostly add contention.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path, where sibling benchmarks (bench/http.py)
# would shadow standard modules: take it off, and import this checkout's catalog/ and devhost/
# rather than whatever an (editable) install left on the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import random
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient, UpdateMode

from catalog import TableCatalogClient
from devhost.azurite import ROOT, Azurite

try:
    from az_table_catalog import TableCatalogClient as SeedClient
except ImportError:  # pragma: no cover - bootstrap installs it from requirements-dev.txt
    sys.exit("az_table_catalog is not installed: run scripts/bootstrap (requirements-dev.txt pins 1.0.1)")

INDEX_KEYS = ["category", "owner"]
ROW_KEY = "id"
CONTENDERS = ("ours", "seed", "plain")
# A reference row, not a contender: plain calls doing the least a log-then-fan-out design must do.
REFERENCE = "plain+wal"


# -- request counting -------------------------------------------------------------------------
class RequestMeter:
    """Counts every HTTP request the Azure SDK sends (and the seconds spent in them), per label.

    Installed by wrapping RequestsTransport.send, the transport every azure-core client uses by
    default: the seed builds its own TableServiceClient without options, so a per-client policy
    could not reach it. Only the active label is counted (None during warm-up and setup)."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.counts: dict[str, Counter] = {}
        self.seconds: dict[str, Counter] = {}  # seconds inside the transport, by request kind
        self._lock = threading.Lock()
        self._original = RequestsTransport.send

    def install(self) -> None:
        meter, original = self, self._original

        def send(transport, request, **kwargs):
            label = meter.label
            if label is None:
                return original(transport, request, **kwargs)
            started = time.perf_counter()
            try:
                return original(transport, request, **kwargs)
            finally:
                took = time.perf_counter() - started
                kind = request_kind(request.method, request.url)
                with meter._lock:
                    meter.counts.setdefault(label, Counter())[kind] += 1
                    meter.seconds.setdefault(label, Counter())[kind] += took

        RequestsTransport.send = send

    def uninstall(self) -> None:
        RequestsTransport.send = self._original

    def measure(self, label: str):
        meter = self

        class _Scope:
            def __enter__(self):
                meter.label = label
                return self

            def __exit__(self, *exc):
                meter.label = None

        return _Scope()


def request_kind(method: str, url: str) -> str:
    path = url.split("?", 1)[0]
    if method == "POST" and path.endswith("$batch"):
        return "batch"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "upsert/replace"
    if method in ("MERGE", "PATCH"):
        return "merge"
    if method == "DELETE":
        return "delete"
    if method == "GET":
        return "point read" if "(PartitionKey=" in path else "query"
    return method.lower()


# -- data ------------------------------------------------------------------------------------
WORDS = ("amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper",
         "kelp", "lumen", "meadow", "nickel", "onyx", "prairie", "quartz", "ridge", "sierra", "tundra")


def make_records(n: int, per_partition: int, prefix: str, rng: random.Random) -> list[dict]:
    """n records; every category and every owner value is shared by exactly `per_partition` records
    (categories are consecutive blocks, owners are strided), so each partition queried holds that many."""
    groups = n // per_partition
    records = []
    for i in range(n):
        desc = " ".join(rng.choice(WORDS) for _ in range(24))
        records.append({
            "id": f"{prefix}item-{i:07d}",
            "category": f"{prefix}cat-{i // per_partition:05d}",
            "owner": f"{prefix}user-{i % groups:05d}",
            "name": f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {i}",
            "description": desc[:160],
            "price": round(rng.uniform(1, 500), 2),
            "quantity": rng.randrange(0, 1000),
            "active": rng.random() < 0.8,
            "region": rng.choice(("westeurope", "northeurope", "eastus", "westus2")),
            "created": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T12:00:00Z",
        })
    return records


def query_targets(records: list[dict], m: int, rng: random.Random) -> list[tuple[str, str]]:
    """m single-key filters, alternating between the two index keys, over the given records."""
    values = {key: sorted({r[key] for r in records}) for key in INDEX_KEYS}
    return [(INDEX_KEYS[q % len(INDEX_KEYS)], rng.choice(values[INDEX_KEYS[q % len(INDEX_KEYS)]]))
            for q in range(m)]


# -- contenders ------------------------------------------------------------------------------
class Contender:
    name: str
    index_table: str
    wal_table: str | None = None
    insert: Callable[[dict], object]
    query: Callable[[str, str], list]

    def settle(self) -> None:
        """Finish work the inserts left in the background (timed and counted with them)."""


class Ours(Contender):
    name = "ours"

    def __init__(self, cs: str, suffix: str):
        self.index_table, self.wal_table = f"benchours{suffix}", f"benchours{suffix}wal"
        self.client = TableCatalogClient(cs, self.index_table, self.wal_table, INDEX_KEYS, ROW_KEY)
        self.insert = self.client.insert

    def settle(self) -> None:
        self.client.close()  # the buffered status marks, written now rather than between rounds

    def query(self, field: str, value: str) -> list:
        return self.client.query({field: value})


class Seed(Contender):
    name = "seed"

    def __init__(self, cs: str, suffix: str):
        # Its default WAL name "<table>_WAL" is not a valid table name: pass one.
        self.index_table, self.wal_table = f"benchseed{suffix}", f"benchseed{suffix}wal"
        self.client = SeedClient(cs, self.index_table, self.wal_table, INDEX_KEYS, ROW_KEY)
        self.insert = self.client.insert

    def query(self, field: str, value: str) -> list:
        return self.client.query({field: value})


class Plain(Contender):
    """The floor: the same fan-out (one entity per index key) and the same single-partition read,
    with nothing else (no log, no stamps, no encoding beyond a separator)."""

    name = "plain"

    def __init__(self, cs: str, suffix: str):
        self.index_table = f"benchplain{suffix}"
        service = TableServiceClient.from_connection_string(cs)
        service.create_table_if_not_exists(self.index_table)
        self.table = service.get_table_client(self.index_table)

    @staticmethod
    def pk(field: str, value: str) -> str:
        return f"{field} {value.casefold()}"

    def insert(self, record: dict) -> dict:
        for field in INDEX_KEYS:
            self.table.upsert_entity({"PartitionKey": self.pk(field, record[field]), "RowKey": record[ROW_KEY],
                                      **record}, mode=UpdateMode.REPLACE)
        return record

    def query(self, field: str, value: str) -> list:
        return [{k: v for k, v in e.items() if k not in ("PartitionKey", "RowKey")}
                for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.pk(field, value)})]


class PlainWal(Plain):
    """Reference floor for a log-first design: 1 create_entity of the record into a WAL table (one
    entity, no entity-group transaction, no header, no status merge afterwards), then the same index
    upserts as plain. Inserts only: its index is plain's, so its queries would be plain's."""

    name = REFERENCE

    def __init__(self, cs: str, suffix: str):
        super().__init__(cs, f"wal{suffix}")
        self.wal_table = f"benchplainwal{suffix}log"
        service = TableServiceClient.from_connection_string(cs)
        service.create_table_if_not_exists(self.wal_table)
        self.wal = service.get_table_client(self.wal_table)
        self._seq = itertools.count()

    def insert(self, record: dict) -> dict:
        stamp = f"{time.time_ns():020d}-{next(self._seq):08d}"
        self.wal.create_entity({"PartitionKey": f"wal{hash(stamp) % 16:02d}", "RowKey": stamp, "kind": "put",
                                "d0": json.dumps(record, separators=(",", ":")).encode()})
        return super().insert(record)


FACTORIES = {"ours": Ours, "seed": Seed, "plain": Plain, REFERENCE: PlainWal}
INSERTERS = (*CONTENDERS, REFERENCE)


# -- measuring -------------------------------------------------------------------------------
def chunks(items: list, count: int) -> list[list]:
    size = -(-len(items) // count)
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_inserts(contender: Contender, records: list[dict], threads: int,
                pool: ThreadPoolExecutor | None) -> tuple[float, float]:
    """Insert the records (copies, so no contender sees another's mutations).
    Returns (wall seconds, this process's CPU seconds): Azurite runs in its own process, so the CPU
    time is what the client side (library + SDK + HTTP stack) costs."""
    copies = [dict(r) for r in records]
    cpu = time.process_time()
    started = time.perf_counter()
    if threads <= 1:
        for r in copies:
            contender.insert(r)
    else:
        # One slice per worker, each slice inserted in order.
        slices = [copies[i::threads] for i in range(threads)]
        for f in [pool.submit(lambda s=s: [contender.insert(r) for r in s]) for s in slices]:
            f.result()
    contender.settle()
    return time.perf_counter() - started, time.process_time() - cpu


def insert_phase(contenders: dict[str, Contender], records: list[dict], warmup: list[dict], rounds: int,
                 threads: int, meter: RequestMeter, phase: str, profile: cProfile.Profile | None = None):
    """Warm up each contender, then insert `records` in `rounds` interleaved rounds with a rotating order.
    Returns {name: (inserts/s, [per-round inserts/s], client CPU ms per insert)}."""
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for c in contenders.values():
            run_inserts(c, warmup, threads, pool)
        elapsed = {n: 0.0 for n in contenders}
        cpu = {n: 0.0 for n in contenders}
        per_round: dict[str, list[float]] = {n: [] for n in contenders}
        names = list(contenders)
        for i, part in enumerate(chunks(records, rounds)):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                with meter.measure(f"{phase}:{name}"):
                    if profile is not None and name == "ours":
                        profile.enable()
                    took, used = run_inserts(contenders[name], part, threads, pool)
                    if profile is not None and name == "ours":
                        profile.disable()
                elapsed[name] += took
                cpu[name] += used
                per_round[name].append(len(part) / took)
        return {n: (len(records) / elapsed[n], per_round[n], cpu[n] / len(records) * 1000) for n in contenders}
    finally:
        if pool is not None:
            pool.shutdown()


def query_phase(contenders: dict[str, Contender], targets: list[tuple[str, str]],
                warmup: list[tuple[str, str]], expect: int, meter: RequestMeter) -> dict[str, list[float]]:
    """Every target queried on every contender in a rotating order; returns latencies in ms."""
    for (field, value) in warmup:
        for c in contenders.values():
            c.query(field, value)
    latencies: dict[str, list[float]] = {n: [] for n in contenders}
    names = list(contenders)
    for q, (field, value) in enumerate(targets):
        for name in names[q % len(names):] + names[:q % len(names)]:
            with meter.measure(f"query:{name}"):
                started = time.perf_counter()
                got = contenders[name].query(field, value)
                latencies[name].append((time.perf_counter() - started) * 1000)
            if len(got) != expect:
                raise SystemExit(f"{name}: query {field}={value!r} returned {len(got)} records, expected {expect}")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def count_entities(cs: str, table: str | None) -> int | None:
    if table is None:
        return None
    client = TableServiceClient.from_connection_string(cs).get_table_client(table)
    # Ours also keeps each record's versions in history partitions h00..h15: not index entities.
    return sum(1 for e in client.list_entities(select=["PartitionKey"])
               if not re.fullmatch(r"h[0-9]{2}", e["PartitionKey"]))


def per_op(counter: Counter | None, seconds: Counter | None, ops: int) -> tuple[str, str]:
    """("4.00", "create 2.00 x 2.6 ms, ...") from a label's request counts and transport seconds."""
    if not counter:
        return "-", "-"
    total = sum(counter.values()) / ops
    seconds = seconds or Counter()
    detail = ", ".join(f"{kind} {n / ops:.2f} x {seconds[kind] / n * 1000:.1f} ms"
                       for kind, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total:.2f}", detail


def library_cpu_per_insert(records: list[dict]) -> float:
    """ms per insert of our client with the in-memory store: the library's own cost, no storage at all."""
    from catalog.adapters.memory import MemoryTableStore

    client = TableCatalogClient("UseDevelopmentStorage=true", "memory", "memorywal", INDEX_KEYS, ROW_KEY,
                                store=MemoryTableStore())
    for r in records[:50]:  # warm-up
        client.insert(dict(r))
    copies = [dict(r) for r in records[50:]]
    started = time.perf_counter()
    for r in copies:
        client.insert(r)
    return (time.perf_counter() - started) / len(copies) * 1000


def azurite_version() -> str:
    try:
        return json.loads((ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=400,
                    help="N: records inserted per contender (and again per contender in the threaded phase)")
    ap.add_argument("--queries", type=int, default=400, help="M: timed single-key queries per contender")
    ap.add_argument("--threads", type=int, default=8, help="threads for the second insert phase (<=1: skip it)")
    ap.add_argument("--per-partition", type=int, default=8, help="records per index value (what a query returns)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds the inserts are split into")
    ap.add_argument("--warmup", type=int, default=64, help="untimed warm-up inserts per contender (and queries)")
    ap.add_argument("--seed", type=int, default=20240601, help="random seed for the data")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile our single-threaded inserts and print the top functions")
    args = ap.parse_args(argv)
    k = args.per_partition
    n = max(k, args.records - args.records % k)
    if n != args.records:
        print(f"note: --records rounded to {n}, a multiple of --per-partition {k}", file=sys.stderr)

    rng = random.Random(args.seed)
    records = make_records(n, k, "", rng)
    warm_records = make_records(args.warmup - args.warmup % k or k, k, "warm", rng)
    mt_records = make_records(n, k, "mt", rng) if args.threads > 1 else []
    mt_warm = make_records(args.warmup - args.warmup % k or k, k, "mtwarm", rng) if args.threads > 1 else []
    targets = query_targets(records, args.queries, rng)
    warm_targets = query_targets(warm_records, max(8, args.warmup // 2), rng)
    sizes = [len(json.dumps(r, separators=(",", ":"))) for r in records]

    meter = RequestMeter()
    meter.install()
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-azurite-") as location:
        azurite = Azurite(location=Path(location))
        azurite.start()
        made: list[Contender] = []
        try:
            cs = azurite.endpoints.connection_string
            st = {name: FACTORIES[name](cs, "st") for name in INSERTERS}
            made += st.values()
            profile = cProfile.Profile() if args.profile else None
            print(f"single-threaded inserts: {n} per contender ...", file=sys.stderr)
            st_rates = insert_phase(st, records, warm_records, args.rounds, 1, meter, "insert1", profile)
            mt_rates = {}
            if args.threads > 1:
                print(f"{args.threads}-thread inserts: {n} per contender ...", file=sys.stderr)
                mt = {name: FACTORIES[name](cs, "mt") for name in INSERTERS}
                made += mt.values()
                mt_rates = insert_phase(mt, mt_records, mt_warm, args.rounds, args.threads, meter, "insertT")
            print(f"queries: {args.queries} per contender ...", file=sys.stderr)
            lat = query_phase({name: st[name] for name in CONTENDERS}, targets, warm_targets, k, meter)
            entities = {name: (count_entities(cs, c.index_table), count_entities(cs, c.wal_table))
                        for name, c in st.items()}
            # Every contender must have written the same index: 1 entity per index key per record.
            expected = {"1 thread": len(INDEX_KEYS) * (n + len(warm_records))}
            found = {"1 thread": {name: e[0] for name, e in entities.items()}}
            if args.threads > 1:
                expected[f"{args.threads} threads"] = len(INDEX_KEYS) * (n + len(mt_warm))
                found[f"{args.threads} threads"] = {name: count_entities(cs, c.index_table) for name, c in mt.items()}
        finally:
            for contender in made:  # ours writes its buffered status marks while Azurite still runs
                if isinstance(contender, Ours):
                    contender.client.close()
            azurite.stop()
    meter.uninstall()
    total = time.perf_counter() - began
    library_ms = library_cpu_per_insert(records)

    # -- report ------------------------------------------------------------------------------
    def counted(phase: str, name: str, ops: int) -> tuple[str, str]:
        return per_op(meter.counts.get(f"{phase}:{name}"), meter.seconds.get(f"{phase}:{name}"), ops)

    def http_ms(phase: str, name: str, ops: int) -> float:
        return sum((meter.seconds.get(f"{phase}:{name}") or Counter()).values()) / ops * 1000

    p50 = {name: percentile(lat[name], 50) for name in lat}
    print("\n## az-table-catalog library benchmark\n")
    print(f"Azurite {azurite_version()} (--location on a temp dir), Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs. N = {n} inserts per contender per phase, M = {args.queries} queries per "
          f"contender, each returning {k} records. Schema index_keys={INDEX_KEYS} row_key={ROW_KEY!r}; "
          f"records {min(sizes)}-{max(sizes)} bytes of JSON (mean {statistics.mean(sizes):.0f}), 10 flat fields. "
          f"{args.rounds} interleaved rounds; warm-up {len(warm_records)} inserts + {len(warm_targets)} queries "
          f"per contender. Run took {total:.0f} s; 1-minute load average "
          f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (above the CPU count, other work "
          f"on the machine inflates every number; the interleaved rounds keep the ratios fair).\n")
    mt_head = f" inserts/s ({args.threads} threads) |" if mt_rates else ""
    print(f"| contender | inserts/s (1 thread) |{mt_head} requests/insert | ms/insert (1 thread): wall = "
          f"in transport + outside | client CPU ms/insert | query p50 ms | query p95 ms | query mean ms "
          f"| requests/query | index entities | WAL entities |")
    print("|---|---:|" + ("---:|" if mt_rates else "") + "---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in INSERTERS:
        rate, _, cpu_ms = st_rates[name]
        mt_cell = f" {mt_rates[name][0]:.0f} |" if mt_rates else ""
        idx, wal = entities[name]
        wall, http = 1000 / rate, http_ms("insert1", name, n)
        if name in lat:
            ls = lat[name]
            q_cells = (f"{p50[name]:.2f} | {percentile(ls, 95):.2f} | {statistics.mean(ls):.2f} "
                       f"| {counted('query', name, args.queries)[0]}")
        else:
            q_cells = "- | - | - | -"
        label = f"{name} (reference)" if name == REFERENCE else name
        print(f"| {label} | {rate:.0f} |{mt_cell} {counted('insert1', name, n)[0]} "
              f"| {wall:.1f} = {http:.1f} + {wall - http:.1f} | {cpu_ms:.1f} | {q_cells} "
              f"| {idx} | {wal if wal is not None else '-'} |")

    ratio_ins = st_rates["ours"][0] / st_rates["seed"][0]
    ratio_q = p50["ours"] / p50["plain"]
    print()
    print(f"- ours inserts/s / seed inserts/s (1 thread): **{ratio_ins:.2f}x** (target >= 2x: "
          f"{'met' if ratio_ins >= 2 else 'MISSED'})")
    if mt_rates:
        ratio_mt = mt_rates["ours"][0] / mt_rates["seed"][0]
        print(f"- ours inserts/s / seed inserts/s ({args.threads} threads): **{ratio_mt:.2f}x** (target >= 2x: "
              f"{'met' if ratio_mt >= 2 else 'MISSED'})")
    print(f"- ours query p50 / plain query p50: **{ratio_q:.2f}x** (target <= 1.3x: "
          f"{'met' if ratio_q <= 1.3 else 'MISSED'})")
    ours_to_plain = st_rates["ours"][0] / st_rates["plain"][0]
    print(f"- for context: ours inserts/s / plain inserts/s (1 thread) {ours_to_plain:.2f}x; "
          f"{REFERENCE} inserts/s / seed inserts/s {st_rates[REFERENCE][0] / st_rates['seed'][0]:.2f}x (what a "
          f"3-request log-then-fan-out insert reaches); seed query p50 / plain query p50 "
          f"{p50['seed'] / p50['plain']:.2f}x")
    print(f"- ours, library logic alone (catalog code on MemoryTableStore, no I/O, no SDK): "
          f"{library_ms:.2f} ms/insert")
    for phase, counts in found.items():
        same = all(v == expected[phase] for v in counts.values())
        print(f"- index entities after the {phase} phase: {'all' if same else 'NOT all'} {expected[phase]} "
              f"(= {len(INDEX_KEYS)} x records inserted)" + ("" if same else f": {counts}"))
    print("\n(in transport: request sent to response read, Azurite's work included; outside: everything "
          "else on the client, SDK pipeline and library; client CPU: this process's CPU time, which also "
          "counts the HTTP stack's own work inside the transport.)")

    print("\nRequests per operation by kind, with the mean time each spent in the HTTP transport "
          "(request sent to response read, Azurite's work included):\n")
    phases = [("insert1", "insert, 1 thread", n)]
    if mt_rates:
        phases.append(("insertT", f"insert, {args.threads} threads", n))
    phases.append(("query", "query", args.queries))
    for phase, title, ops in phases:
        for name in (CONTENDERS if phase == "query" else INSERTERS):
            total_req, detail = counted(phase, name, ops)
            print(f"- {title}, {name}: {total_req} = {detail}")

    print("\nInserts/s per round, 1 thread (spread = noise from the machine):\n")
    for name in INSERTERS:
        print(f"- {name}: " + ", ".join(f"{r:.0f}" for r in st_rates[name][1]))

    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print("\ncProfile of ours, single-threaded inserts (cumulative):\n\n```")
        print(out.getvalue().strip())
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
