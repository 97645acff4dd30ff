#!/usr/bin/env python3
"""Benchmark: the catalog's HTTP app end to end, through the local Functions host, on one Azurite.

    scripts/bootstrap && .venv/bin/python bench/http.py [--n 300] [--quick] [-h for every knob]

A benchmark, not a test: it prints one markdown table, then the evidence behind it. Everything
runs on this machine: the script starts one Azurite (persisting to a temporary --location, never
in memory) and the dev host as a subprocess (`.venv/bin/python -m catalog serve --port <free>`,
cwd = repo root, `--settings` pointing at a file that does not exist, settings from the
environment, the timer sweep scheduled once a year and `--no-timers`), and stops both at the end,
also on error, Ctrl-C or SIGTERM. Defaults take about 2-5 minutes on a 2-core machine.

What is measured (time.perf_counter everywhere; every phase warmed up first):

1. Single-record ingest: POST /api/records with one record, at 1, 8 and 32 concurrent clients
   (one thread with its own requests.Session per client, --n requests per level): requests/s and
   p50/p99 latency. The host runs with --no-queues here, so ingest is measured alone and the
   accepted operations pile up in the queue as the backlog of (4a). Row 1b, for context: 8
   clients while the queue trigger applies on the same machine.
2. Bulk ingest: POST arrays of --bulk-size records from --bulk-clients clients: records/s. Same
   host mode, separate catalog (its backlog is (4b)).
3. 202 -> applied: --latency-ops single-record operations submitted open-loop (exponential gaps,
   mean rate --latency-rate ops/s) to a host whose queue trigger runs; each is polled with
   GET /api/operations/{id} every --poll-ms until it reads `applied`. Reported: 202 response ->
   first GET reading applied; and, from the operation itself, the server-side accepted ->
   finished time (no polling error).
4. Materialization of a backlog by the queue trigger: the catalog of (1) (then of (2)) is served
   by a fresh host with queues on; the clock starts when the host answers /admin/host/status
   (its queue pollers start right after the HTTP server) and stops at the later of the queue
   being empty (the host deletes a message only after the function returned, i.e. after the
   operation was applied; Azurite's message count includes invisible messages) and the last
   status mark's write (the app writes one-record operations' marks in the background: taken
   from the newest WAL entity's Timestamp), once /api/health shows `pending: 0`. Entities =
   records x (2 index keys + 1 history row). The average number of
   functions running is the sum of the durations the host logged divided by the drain time.
   Next to it: plain azure-data-tables `upsert_entity` of the very same entities, history rows
   included (same keys, properties and sizes, built with the catalog's own key and record encoding) into a fresh
   table, from as many threads as the host may run messages at once (host.json batchSize +
   newBatchThreshold = 24) sharing one TableClient (the SDK's default transport, with a
   connection pool of that many connections), as the host's appliers share the catalog's;
   half of them right before the drain and half right after, so drift in the machine's load hits
   both alike. Ratio target >= 70%.
5. Reference: the seed package (az-table-catalog 1.0.1) inserting the same records from 8
   threads, and single-record ingest at 8 clients / seed inserts at 8 threads (target >= 3x).

The evidence printed under the table: storage requests per operation on each path, counted in
this process on the same service code (catalog.bootstrap.build_service) with the Azure SDK
transport wrapped (the host adds 1 delete and 1/16 of a receive per queue message, see
devhost/queues.py); and the CPU seconds Azurite, the host and this script used per unit of work
in each phase (from /proc), which say which process bounds a rate and are less sensitive than
wall time to whatever else runs on the machine.

Caveats: Azurite is a single Node.js thread and the host, Azurite and this script's clients
share the machine's cores; the numbers compare paths on one machine, they are not a capacity
statement about Azure Storage.
"""
from __future__ import annotations

import os
import sys

# This file is named http.py and Python puts its folder first on sys.path when it runs as a
# script: drop that entry, or `import http.client` (requests, azure-core) would find this file.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import itertools
import json
import logging
import math
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import this checkout's catalog/ and devhost/ (read-only use: keys, codec, service wiring, Azurite).
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import requests.adapters  # noqa: E402
from azure.core.pipeline.transport import RequestsTransport  # noqa: E402
from azure.data.tables import TableServiceClient, UpdateMode  # noqa: E402
from azure.storage.queue import QueueClient  # noqa: E402

from catalog import codec  # noqa: E402
from catalog.bootstrap import build_service  # noqa: E402
from catalog.index import history_entity  # noqa: E402
from catalog.keys import record_keys  # noqa: E402
from catalog.settings import Schema, Settings  # noqa: E402
from devhost.azurite import Azurite, free_port, stop_process_group  # noqa: E402
from devhost.settings import load_host_json  # noqa: E402

INDEX_KEYS = ("sku", "category")
ROW_KEY = "name"
SCHEMA = Schema(INDEX_KEYS, ROW_KEY)
NEVER = "0 0 0 1 1 *"  # NCRONTAB: midnight on January 1st; the timer is not started anyway
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
NO_SETTINGS_FILE = "/nonexistent/local.settings.json"


# -- small helpers -----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..1)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc; 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Cpu:
    """CPU seconds used by Azurite, the host and this script over one measured span."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.wall0 = time.perf_counter()
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def stop(self, wall: float | None = None) -> Cpu:
        self.wall = wall if wall is not None else time.perf_counter() - self.wall0
        self.used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        return self

    def per(self, units: int, unit: str) -> str:
        parts = [f"{name} {self.used[name] * 1000 / units:.2f}" for name in self.pids]
        busy = ", ".join(f"{name} {self.used[name] / self.wall:.0%}" for name in self.pids)
        return f"CPU ms per {unit}: {', '.join(parts)} (busy: {busy})"


WORDS = ("amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper",
         "kelp", "lumen", "meadow", "nickel", "onyx", "prairie", "quartz", "ridge", "sierra", "tundra")


def make_records(n: int, prefix: str, rng: random.Random, categories: int = 40) -> list[dict]:
    """Flat records (the seed stores fields as properties, so no lists or objects), ~300 bytes of
    JSON each; sku unique, category one of `categories`, name unique (the row key)."""
    out = []
    for i in range(n):
        out.append({
            "sku": f"{prefix}-{i:07d}",
            "category": f"cat-{i % categories:03d}",
            "name": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {prefix} {i:07d}",
            "description": " ".join(rng.choice(WORDS) for _ in range(24))[:150],
            "price": round(rng.uniform(1, 500), 2),
            "quantity": rng.randrange(0, 1000),
            "active": rng.random() < 0.8,
            "region": rng.choice(("westeurope", "northeurope", "eastus", "westus2")),
        })
    return out


def body_of(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy or netrc lookups for 127.0.0.1
    return s


# -- the host subprocess -----------------------------------------------------------------------
class HostProcess:
    """`python -m catalog serve` for one catalog, as a subprocess in its own process group."""

    def __init__(self, connection_string: str, table: str, *, queues: bool, log_dir: Path, label: str,
                 tcp_nodelay: bool = False):
        self.table = table
        self.queues = queues
        self.tcp_nodelay = tcp_nodelay
        self.port = free_port()
        self.log_path = log_dir / f"host-{label}.log"
        self.proc: subprocess.Popen | None = None
        self.ready_at: float | None = None
        self.cpu_at_ready = 0.0
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CATALOG_", "AzureWebJobs", "AZURE_STORAGE", "TABLE_CATALOG"))}
        env.update({
            "AzureWebJobsStorage": connection_string,
            "CATALOG_TABLE": table,
            "CATALOG_WAL_TABLE": f"{table}wal",
            "CATALOG_QUEUE": f"{table}-wal",
            "CATALOG_INDEX_KEYS": ",".join(INDEX_KEYS),
            "CATALOG_ROW_KEY": ROW_KEY,
            "CATALOG_CASE_SENSITIVE": "false",
            "CATALOG_SWEEP_SCHEDULE": NEVER,
            "FUNCTIONS_WORKER_RUNTIME": "python",
        })
        self.env = env

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/{route}"

    def start(self, timeout: float = 60.0) -> HostProcess:
        python = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
        serve = ["serve", "--port", str(self.port), "--settings", NO_SETTINGS_FILE, "--no-timers"]
        if not self.queues:
            serve.append("--no-queues")
        if self.tcp_nodelay:
            # Experiment only (--tcp-nodelay): the same command run through runpy. The dev host's
            # server (uvicorn on asyncio) sets TCP_NODELAY on its sockets itself, so nothing is patched.
            code = ("import runpy, sys; "
                    f"sys.argv = ['catalog'] + {serve!r}; runpy.run_module('catalog', run_name='__main__')")
            args = [python, "-c", code]
        else:
            args = [python, "-m", "catalog", *serve]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        status = f"http://127.0.0.1:{self.port}/admin/host/status"
        deadline = time.perf_counter() + timeout
        with session() as s:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the host exited with {self.proc.returncode} before answering; "
                                       f"log:\n{self.tail()}")
                try:
                    if s.get(status, timeout=1).status_code == 200:
                        self.ready_at = time.perf_counter()
                        self.cpu_at_ready = cpu_seconds(self.proc.pid)
                        return self
                except requests.RequestException:
                    pass
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the host did not answer {status} within {timeout:.0f}s; "
                                       f"log:\n{self.tail()}")
                time.sleep(0.01)

    def stop(self, grace: float = 40.0) -> None:
        """SIGTERM (the host finishes messages in flight, up to 30 s), then SIGKILL."""
        stop_process_group(self.proc, grace)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def busy_seconds(self, function: str) -> float:
        """Sum of the durations the host logged for a function's successful invocations so far."""
        pattern = re.compile(rf"Executed 'Functions\.{re.escape(function)}' \(Succeeded.*Duration=(\d+)ms")
        try:
            return sum(int(m.group(1)) for m in pattern.finditer(self.log_path.read_text(errors="replace"))) / 1000
        except OSError:
            return 0.0

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0


# -- HTTP load ---------------------------------------------------------------------------------
@dataclass
class LoadResult:
    elapsed: float
    latencies: list[float]
    operations: list[str]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed


def run_clients(url: str, bodies: list[bytes], clients: int) -> LoadResult:
    """POST every body once, from `clients` threads (a Session each), as fast as they answer.
    Anything but 202 aborts the benchmark."""
    next_index = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    operations: list[str] = []
    errors: list[str] = []
    marks: dict[str, float] = {}
    barrier = threading.Barrier(clients, action=lambda: marks.setdefault("start", time.perf_counter()))
    headers = {"content-type": "application/json"}

    def client() -> None:
        mine_lat, mine_ops = [], []
        with session() as s:
            try:
                s.get(url.rsplit("/api/", 1)[0] + "/admin/host/status", timeout=10)  # open the connection
            except requests.RequestException:
                pass
            barrier.wait()
            while not errors:
                with lock:
                    i = next(next_index)
                if i >= len(bodies):
                    break
                t = time.perf_counter()
                try:
                    r = s.post(url, data=bodies[i], headers=headers, timeout=60)
                except requests.RequestException as e:
                    errors.append(f"request {i}: {e}")
                    break
                took = time.perf_counter() - t
                if r.status_code != 202:
                    errors.append(f"request {i}: {r.status_code} {r.text[:300]}")
                    break
                mine_lat.append(took)
                mine_ops.append(r.json()["operation"])
        with lock:
            latencies.extend(mine_lat)
            operations.extend(mine_ops)

    threads = [threading.Thread(target=client, name=f"client-{c}") for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    if errors:
        raise RuntimeError("ingest failed: " + "; ".join(errors[:3]))
    return LoadResult(end - marks["start"], latencies, operations)


def latency_202_to_applied(host: HostProcess, records: list[dict], rate: float, poll: float,
                           rng: random.Random) -> tuple[list[float], list[float], int]:
    """Open-loop: operation i is submitted at start + sum of exponential gaps (mean 1/rate), each by
    its own worker, which then polls its operation every `poll` seconds until it is applied.
    Returns (202 -> applied seen, server accepted -> finished, GETs issued)."""
    local = threading.local()
    observed: list[float] = []
    server: list[float] = []
    gets = Counter()
    lock = threading.Lock()
    errors: list[str] = []

    def one(i: int, due: float) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = session()
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        r = s.post(host.url("records"), data=body_of(records[i]), headers={"content-type": "application/json"},
                   timeout=30)
        accepted_at = time.perf_counter()
        if r.status_code != 202:
            errors.append(f"POST {r.status_code} {r.text[:200]}")
            return
        op = r.json()["operation"]
        deadline = accepted_at + 60
        n = 0
        while time.perf_counter() < deadline:
            g = s.get(host.url(f"operations/{op}"), timeout=30)
            n += 1
            if g.status_code == 200 and g.json().get("status") == "applied":
                seen = time.perf_counter() - accepted_at
                view = g.json()
                took = (datetime.fromisoformat(view["finished"]) - datetime.fromisoformat(view["accepted"]))
                with lock:
                    observed.append(seen)
                    server.append(took.total_seconds())
                    gets[op] = n
                return
            if g.status_code != 200 or g.json().get("status") == "failed":
                errors.append(f"GET {op}: {g.status_code} {g.text[:200]}")
                return
            time.sleep(poll)
        errors.append(f"operation {op} not applied within 60 s")

    start = time.perf_counter() + 0.2
    due = start
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="latency") as pool:
        futures = []
        for i in range(len(records)):
            futures.append(pool.submit(one, i, due))
            due += rng.expovariate(rate)
        for f in futures:
            f.result()
    if errors:
        raise RuntimeError("202->applied sampling failed: " + "; ".join(errors[:3]))
    return observed, server, sum(gets.values())


# -- materialization ---------------------------------------------------------------------------
def noop_latency(host: HostProcess, n: int = 40) -> list[float]:
    """Latency of the host's built-in status route: what any request costs before the app runs."""
    out = []
    with session() as s:
        url = f"http://127.0.0.1:{host.port}/admin/host/status"
        s.get(url, timeout=10)
        for _ in range(n):
            t = time.perf_counter()
            s.get(url, timeout=10)
            out.append(time.perf_counter() - t)
    return out


def queue_depth(client: QueueClient) -> int:
    return int(client.get_queue_properties().approximate_message_count or 0)


def last_wal_write(host: HostProcess) -> float:
    """time.time() of the newest write to the catalog's WAL shards: after a drain, the last status
    mark (Azurite stamps each write with this machine's clock, to the millisecond)."""
    client = TableServiceClient.from_connection_string(host.env["AzureWebJobsStorage"]).get_table_client(
        host.env["CATALOG_WAL_TABLE"])
    return max(e.metadata["timestamp"].timestamp()
               for e in client.query_entities("PartitionKey ge 'wal' and PartitionKey lt 'wam'"))


def drain(host: HostProcess, queue: QueueClient, timeout: float, poll: float = 0.025) -> tuple[float, dict]:
    """Seconds from the host being up until the backlog is applied and marked: the later of the
    queue being empty (Azurite's message count includes invisible, in-flight messages, and the
    host deletes a message only after its function returned, i.e. after the operation was
    applied) and the last status mark's write (one-record operations are marked in the
    background, up to ~50 ms after their message is gone). /api/health must then show pending 0.
    Taking the mark's own write time keeps this script's polling interval out of the result."""
    t0 = host.ready_at
    assert t0 is not None
    deadline = t0 + timeout
    while True:
        if host.proc is not None and host.proc.poll() is not None:
            raise RuntimeError(f"the host exited during the drain; log:\n{host.tail()}")
        if queue_depth(queue) == 0:
            empty_at = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"backlog not applied within {timeout:.0f}s (depth {queue_depth(queue)}); "
                               f"log:\n{host.tail()}")
        time.sleep(poll)
    with session() as s:
        while True:
            health = s.get(host.url("health"), timeout=60).json()
            if health.get("pending") == 0:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"health still shows {health.get('pending')} pending")
            time.sleep(0.1)
    marked_at = last_wal_write(host) - (time.time() - time.perf_counter())  # on the perf_counter clock
    say(f"   drained: queue empty after {empty_at - t0:.2f} s, last WAL write (status mark) after "
        f"{marked_at - t0:.2f} s")
    return max(empty_at, marked_at) - t0, health


ENTITIES_PER_RECORD = len(INDEX_KEYS) + 1  # its index entities and its version in the history


def index_entities(records: list[dict], rng: random.Random) -> list[dict]:
    """Exactly what the materializer writes for these records: keys from catalog.keys, the record
    JSON in binary chunks (catalog.codec), a stamp like a WAL RowKey and the tombstone flag; and the
    record's version in its history (catalog.index.history_entity)."""
    out = []
    for r in records:
        keys = record_keys(SCHEMA, r)
        stamp = f"20250101T000000{rng.randrange(10**6):06d}Z-{rng.randrange(16):02d}{secrets.token_hex(5)}-00000"
        data = codec.dumps(r)
        props = {"s": stamp, "x": False, **codec.chunk_properties(data)}
        for pk in keys.partition_keys:
            out.append({"PartitionKey": pk, "RowKey": keys.row_key, **props})
        out.append(history_entity(keys, stamp, "put", data))
    return out


def plain_upserts(connection_string: str, table: str, entities: list[dict], warmup: list[dict],
                  threads: int, *, create: bool = True) -> float:
    """upsert_entity (replace) of every entity from `threads` threads sharing one TableClient, as the
    host's appliers share the catalog's. The client is the SDK's default (RequestsTransport on a
    requests.Session) with one change a careful user makes for that many threads: a connection
    pool as large as the thread count (the default keeps 10 and opens and drops the rest)."""
    http = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(10, threads))
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    service = TableServiceClient.from_connection_string(connection_string,
                                                        transport=RequestsTransport(session=http, session_owner=True))
    if create:
        service.create_table(table)
    client = service.get_table_client(table)
    for e in warmup:
        client.upsert_entity(e, mode=UpdateMode.REPLACE)
    next_index = itertools.count()
    lock = threading.Lock()
    marks: dict[str, float] = {}
    barrier = threading.Barrier(threads, action=lambda: marks.setdefault("start", time.perf_counter()))
    errors: list[str] = []

    def worker() -> None:
        barrier.wait()
        while not errors:
            with lock:
                i = next(next_index)
            if i >= len(entities):
                return
            try:
                client.upsert_entity(entities[i], mode=UpdateMode.REPLACE)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("plain upserts failed: " + errors[0])
    return time.perf_counter() - marks["start"]


class PlainRun:
    """Plain upserts into one fresh table, possibly in several timed parts (summed)."""

    def __init__(self, connection_string: str, table: str, warmup: list[dict], threads: int, azurite_pid: int):
        self.connection_string, self.table, self.warmup, self.threads = connection_string, table, warmup, threads
        self.azurite_pid = azurite_pid
        self.entities = 0
        self.seconds = 0.0
        self.cpu = {"azurite": 0.0, "bench": 0.0}
        self.created = False

    def run(self, entities: list[dict]) -> None:
        cpu = Cpu({"azurite": self.azurite_pid, "bench": os.getpid()})
        self.seconds += plain_upserts(self.connection_string, self.table, entities,
                                      [] if self.created else self.warmup, self.threads, create=not self.created)
        cpu.stop()
        for k in self.cpu:
            self.cpu[k] += cpu.used[k]
        self.created = True
        self.entities += len(entities)

    @property
    def rate(self) -> float:
        return self.entities / self.seconds

    def cpu_note(self) -> str:
        parts = ", ".join(f"{k} {v * 1000 / self.entities:.2f}" for k, v in self.cpu.items())
        return f"CPU ms per entity: {parts} ({self.seconds:.1f} s for {self.entities} entities)"


def cpu_pair(trigger: Cpu, entities: int, plain: PlainRun) -> str:
    """CPU per entity, queue trigger vs plain: the resources that bound throughput, less sensitive than
    wall time to other load on the machine."""
    return (f"CPU ms/entity: Azurite {trigger.used['azurite'] * 1000 / entities:.2f} vs "
            f"{plain.cpu['azurite'] * 1000 / plain.entities:.2f}, Python (host vs plain client) "
            f"{trigger.used['host'] * 1000 / entities:.2f} vs {plain.cpu['bench'] * 1000 / plain.entities:.2f}")


@dataclass
class Materialized:
    """One backlog drained by a fresh host's queue trigger, next to plain upserts of its entities."""
    seconds: float
    rate: float  # entities/s: index entities and history rows
    plain_rate: float
    in_flight: float  # functions running on average
    cpu_pair: str


def materialize(start_host: Callable[[], HostProcess], queue: QueueClient, entities: int, plain: PlainRun,
                plain_entities: list[dict], drain_timeout: float, azurite_pid: int, label: str,
                cpu_notes: list[str], *, keep_host: bool = False) -> tuple[Materialized, HostProcess]:
    """Plain upserts of half the entities, the drain, then the other half (so drift in the machine's
    load hits both alike); the host is stopped before the second half unless `keep_host`."""
    plain.run(plain_entities[:len(plain_entities) // 2])
    h = start_host()
    cpu = Cpu({"azurite": azurite_pid, "host": h.proc.pid})
    cpu.start["host"] = h.cpu_at_ready
    seconds, _ = drain(h, queue, drain_timeout)
    cpu.stop(seconds)
    in_flight = h.busy_seconds("apply_wal_message") / seconds
    if not keep_host:
        h.stop()
    plain.run(plain_entities[len(plain_entities) // 2:])
    cpu_notes.append(f"{label}, queue trigger: " + cpu.per(entities, "entity"))
    result = Materialized(seconds, entities / seconds, plain.rate, in_flight, cpu_pair(cpu, entities, plain))
    cpu_notes.append(f"{label}, plain upserts: " + plain.cpu_note())
    return result, h


class PoolWarnings(logging.Handler):
    """Counts urllib3's 'Connection pool is full' warnings in this process (instead of printing them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self._logger = logging.getLogger("urllib3.connectionpool")

    def emit(self, record: logging.LogRecord) -> None:
        if "Connection pool is full" in record.getMessage():
            self.count += 1

    def install(self) -> PoolWarnings:
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def uninstall(self) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = True


# -- the seed ----------------------------------------------------------------------------------
def seed_inserts(connection_string: str, table: str, records: list[dict], warmup: list[dict],
                 threads: int) -> LoadResult:
    from az_table_catalog import TableCatalogClient as Seed

    # Its default WAL name "<table>_WAL" is not a valid table name: pass one.
    client = Seed(connection_string, table, f"{table}wal", list(INDEX_KEYS), ROW_KEY)
    for r in warmup:
        client.insert(r)
    next_index = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    marks: dict[str, float] = {}
    barrier = threading.Barrier(threads, action=lambda: marks.setdefault("start", time.perf_counter()))
    errors: list[str] = []

    def worker() -> None:
        mine = []
        barrier.wait()
        while not errors:
            with lock:
                i = next(next_index)
            if i >= len(records):
                break
            t = time.perf_counter()
            try:
                client.insert(records[i])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
                break
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("seed inserts failed: " + errors[0])
    return LoadResult(time.perf_counter() - marks["start"], latencies, [])


# -- storage requests per operation ------------------------------------------------------------
class RequestCounter:
    """Counts the HTTP requests the Azure SDK sends from this process, by kind, while active."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.active = False
        self._original = RequestsTransport.send
        self._lock = threading.Lock()

    def __enter__(self) -> RequestCounter:
        counter, original = self, self._original

        def send(transport, request, **kwargs):
            if counter.active:
                with counter._lock:
                    counter.counts[kind_of(request.method, request.url)] += 1
            return original(transport, request, **kwargs)

        RequestsTransport.send = send
        return self

    def __exit__(self, *exc) -> None:
        RequestsTransport.send = self._original

    def count(self, fn):
        self.counts = Counter()
        self.active = True
        try:
            result = fn()
        finally:
            self.active = False
        return result, Counter(self.counts)


def kind_of(method: str, url: str) -> str:
    path = url.split("?", 1)[0]
    if "/messages" in path:
        return {"POST": "queue send", "GET": "queue receive", "DELETE": "queue delete",
                "PUT": "queue update"}.get(method, f"queue {method}")
    if method == "POST":
        return "table batch" if path.endswith("$batch") else "table insert"
    if method in ("MERGE", "PATCH"):
        return "table merge"
    if method == "PUT":
        return "table replace/upsert"
    if method == "GET":
        return "table point read" if "(PartitionKey=" in path else "table query"
    return f"table {method}"


def describe_counts(c: Counter) -> str:
    total = sum(c.values())
    parts = ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
    return f"{total} ({parts})"


class CapturingQueue:
    """Stands in for the catalog's queue in the in-process count: keeps the message text."""

    name = "captured"

    def __init__(self) -> None:
        self.messages: list[str] = []

    def create(self) -> None:
        pass

    def send(self, text: str) -> None:
        self.messages.append(text)


def count_requests(connection_string: str, table: str, records: list[dict], bulk: int) -> dict[str, Counter]:
    """Storage requests of one single-record and one bulk operation, ingest and apply, measured on the
    service code the host runs (the queue send is counted by adding one: the real queue client is
    replaced so the message can be applied here)."""
    env = {"AzureWebJobsStorage": connection_string, "CATALOG_TABLE": table, "CATALOG_INDEX_KEYS": ",".join(INDEX_KEYS),
           "CATALOG_ROW_KEY": ROW_KEY, "CATALOG_SWEEP_SCHEDULE": NEVER}
    settings = Settings.from_env(env)
    queue = CapturingQueue()
    service = build_service(settings, queue=queue, poison_queue=CapturingQueue())
    service.submit([records[0]])  # warm: clients, connections
    service.apply_message(queue.messages.pop())
    service.flush()  # the warm-up's status mark, so it is not counted below
    out: dict[str, Counter] = {}
    with RequestCounter() as counter:
        _, out["ingest, 1 record"] = counter.count(lambda: service.submit([records[1]]))
        out["ingest, 1 record"]["queue send"] += len(queue.messages)
        _, out["apply, 1 record"] = counter.count(lambda: service.apply_message(queue.messages.pop()))
        # Its status mark waits in the buffer (written by a background thread, batched per shard
        # under load): written here on its own, the most it can cost.
        _, out["status mark of that record, written alone"] = counter.count(service.flush)
        _, out[f"ingest, {bulk} records"] = counter.count(lambda: service.submit(records[2:2 + bulk]))
        out[f"ingest, {bulk} records"]["queue send"] += len(queue.messages)
        text = queue.messages.pop()
        embedded = "e" in json.loads(text)
        _, out[f"apply, {bulk} records" + ("" if embedded else " (read from the WAL)")] = counter.count(
            lambda: service.apply_message(text))
    return out


# -- main --------------------------------------------------------------------------------------
@dataclass
class Row:
    n: str
    what: str
    concurrency: str
    count: str
    rate: str
    p50: str = ""
    p99: str = ""
    compare: str = ""
    target: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        head = ["#", "measurement", "concurrency", "count", "throughput", "p50 ms", "p99 ms", "comparison",
                "target"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join([r.n, r.what, r.concurrency, r.count, r.rate, r.p50, r.p99,
                                             r.compare, r.target]) + " |")
        return "\n".join(lines)


def code_version() -> str:
    """The commit measured, and whether the code the host runs differs from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "catalog", "devhost", "function_app.py",
                                "host.json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {sha}" + (f" with uncommitted changes in {', '.join(changed)}" if changed else ", clean")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="single-record POSTs per concurrency level")
    p.add_argument("--levels", default="1,8,32", help="concurrent clients for single-record ingest")
    p.add_argument("--warmup", type=int, default=40, help="untimed single-record POSTs before the levels")
    p.add_argument("--bulk-size", type=int, default=100, help="records per bulk POST")
    p.add_argument("--bulk-clients", type=int, default=4, help="concurrent clients posting bulk arrays")
    p.add_argument("--bulk-requests", type=int, default=48, help="timed bulk POSTs (the bulk backlog)")
    p.add_argument("--latency-ops", type=int, default=50, help="operations sampled for 202 -> applied")
    p.add_argument("--latency-rate", type=float, default=4.0, help="their arrival rate, operations/s")
    p.add_argument("--poll-ms", type=float, default=5.0, help="GET /api/operations/{id} interval")
    p.add_argument("--apply-threads", type=int, default=None,
                   help="plain upsert threads (default: host.json batchSize + newBatchThreshold)")
    p.add_argument("--seed-records", type=int, default=160, help="records the seed inserts (timed)")
    p.add_argument("--seed-threads", type=int, default=8)
    p.add_argument("--drain-timeout", type=float, default=240.0)
    p.add_argument("--tcp-nodelay", action="store_true",
                   help="experiment, not the benchmark: start the host with TCP_NODELAY on its HTTP server sockets "
                        "(the dev host writes headers and body in two sends, so Nagle + delayed ACK add ~40 ms "
                        "to every response)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (Azurite data, host logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.warmup, args.bulk_requests, args.latency_ops, args.seed_records = 40, 8, 8, 8, 24
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    queue_opts = load_host_json(ROOT / "host.json").queues
    apply_threads = args.apply_threads or (queue_opts.batch_size + queue_opts.threshold)
    azurite_version = json.loads((ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    rng = random.Random(20240601)
    run = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    hosts: list[HostProcess] = []
    azurite = Azurite(location=tmp / "azurite", log=tmp / "azurite.log")
    report = Report()
    pool_warnings = PoolWarnings().install()
    previous_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    load_before = os.getloadavg()
    version_before = code_version()
    started = time.perf_counter()
    failed = False

    def host(table: str, queues: bool, label: str) -> HostProcess:
        h = HostProcess(azurite.endpoints.connection_string, table, queues=queues, log_dir=tmp, label=label,
                        tcp_nodelay=args.tcp_nodelay)
        hosts.append(h)
        return h.start()

    try:
        say(f"bench/http.py: Azurite {azurite_version} in {tmp}, {os.cpu_count()} cores, run {run}")
        azurite.start()
        conn = azurite.endpoints.connection_string
        az_pid = azurite.proc.pid
        cpu_notes: list[str] = []
        ingest_at_8 = float("nan")
        singles_table, bulk_table = f"hb{run}single", f"hb{run}bulk"
        total_singles = args.warmup + args.n * len(args.levels)
        records = make_records(total_singles + 8 + args.latency_ops + args.n, f"S{run}", rng)
        backlog_records = records[:total_singles]
        latency_warm = records[total_singles:total_singles + 8]
        latency_records = records[total_singles + 8:total_singles + 8 + args.latency_ops]
        steady_bodies = [body_of(r) for r in records[total_singles + 8 + args.latency_ops:]]
        bodies = [body_of(r) for r in backlog_records]
        warm_bodies, timed_bodies = bodies[:args.warmup], bodies[args.warmup:]

        # 1. Single-record ingest with the queue trigger off: the operations become the backlog of 4a.
        h = host(singles_table, queues=False, label="1-ingest")
        say(f"1. single-record ingest: warm-up {args.warmup}, then {args.n} per level {args.levels}")
        run_clients(h.url("records"), warm_bodies, 8)
        floor = noop_latency(h)
        for level_index, clients in enumerate(args.levels):
            level = timed_bodies[level_index * args.n:(level_index + 1) * args.n]
            cpu = Cpu({"azurite": az_pid, "host": h.proc.pid, "bench": os.getpid()})
            res = run_clients(h.url("records"), level, clients)
            cpu_notes.append(f"1, {clients} client(s): " + cpu.stop().per(len(level), "request"))
            report.rows.append(Row("1", "single-record ingest, `POST /api/records` (queue trigger off)",
                                   f"{clients} client{'s' if clients > 1 else ''}", f"{len(level)} req",
                                   f"**{res.rate:.0f} req/s**", ms(percentile(res.latencies, .5)),
                                   ms(percentile(res.latencies, .99))))
            if clients == 8:
                ingest_at_8 = res.rate
        h.stop()

        # 4a. The single-record backlog, applied by a fresh host's queue trigger; the plain upserts of
        # the same entities run half right before and half right after, so drift hits both alike.
        singles_ops = total_singles
        single_entities = singles_ops * ENTITIES_PER_RECORD
        queue = QueueClient.from_connection_string(conn, f"{singles_table}-wal")
        depth = queue_depth(queue)
        if not 0 < depth <= singles_ops:  # group commit puts concurrent one-record writes in one message
            raise RuntimeError(f"expected 1 to {singles_ops} messages in the queue, found {depth}")
        messages_a = depth
        ent = index_entities(backlog_records, rng)
        warm_ent = index_entities(make_records(48, f"W{run}", rng), rng)
        say(f"4a. plain upsert_entity of the same {len(ent)} entities, {apply_threads} threads (half before, "
            f"half after the drain); materializing {singles_ops} single-record operations")
        plain = PlainRun(conn, f"hb{run}plain1", warm_ent, apply_threads, az_pid)
        # The host stays up: (3) and (1b) run on it.
        m_a, h = materialize(lambda: host(singles_table, queues=True, label="4a-apply"), queue, single_entities,
                             plain, ent, args.drain_timeout, az_pid, "4a", cpu_notes, keep_host=True)

        # 3. 202 -> applied, on the same host (its queue trigger runs; the backlog is gone).
        say(f"3. 202 -> applied: {args.latency_ops} operations at {args.latency_rate}/s, "
            f"polled every {args.poll_ms} ms")
        latency_202_to_applied(h, latency_warm, args.latency_rate * 2, args.poll_ms / 1000, rng)
        observed, server, gets = latency_202_to_applied(h, latency_records, args.latency_rate,
                                                        args.poll_ms / 1000, rng)

        # 1b. For context: 8 clients ingesting while the queue trigger applies (one machine for both).
        say(f"1b. single-record ingest at 8 clients with the queue trigger on: {len(steady_bodies)} requests")
        cpu = Cpu({"azurite": az_pid, "host": h.proc.pid, "bench": os.getpid()})
        steady = run_clients(h.url("records"), steady_bodies, 8)
        cpu_notes.append("1b, 8 clients, trigger on: " + cpu.stop().per(len(steady_bodies), "request"))
        h.stop()

        # 2. Bulk ingest, queue trigger off: the backlog of 4b.
        bulk_records = make_records((args.bulk_requests + 2) * args.bulk_size, f"B{run}", rng)
        bulk_bodies = [body_of(bulk_records[i:i + args.bulk_size])
                       for i in range(0, len(bulk_records), args.bulk_size)]
        say(f"2. bulk ingest: {args.bulk_requests} POSTs of {args.bulk_size} records, {args.bulk_clients} clients")
        h = host(bulk_table, queues=False, label="2-bulk")
        run_clients(h.url("records"), bulk_bodies[:2], 2)
        cpu = Cpu({"azurite": az_pid, "host": h.proc.pid, "bench": os.getpid()})
        bulk = run_clients(h.url("records"), bulk_bodies[2:], args.bulk_clients)
        cpu_notes.append("2, bulk ingest: " + cpu.stop().per(args.bulk_requests * args.bulk_size, "record"))
        h.stop()

        # 4b. The bulk backlog, same procedure as 4a.
        bulk_ops = args.bulk_requests + 2
        bulk_entities = bulk_ops * args.bulk_size * ENTITIES_PER_RECORD
        queue_b = QueueClient.from_connection_string(conn, f"{bulk_table}-wal")
        depth = queue_depth(queue_b)
        if depth != bulk_ops:
            raise RuntimeError(f"expected {bulk_ops} messages in the bulk queue, found {depth}")
        ent_b = index_entities(bulk_records, rng)
        say(f"4b. plain upsert_entity of the same {len(ent_b)} entities, {apply_threads} threads (half before, "
            f"half after); materializing {bulk_ops} bulk operations ({bulk_ops * args.bulk_size} records)")
        plain_b = PlainRun(conn, f"hb{run}plain2", warm_ent, apply_threads, az_pid)
        m_b, _ = materialize(lambda: host(bulk_table, queues=True, label="4b-apply"), queue_b, bulk_entities,
                             plain_b, ent_b, args.drain_timeout, az_pid, "4b", cpu_notes)

        # 5. The seed, 8 threads, the first records of the timed single-record ingest.
        say(f"5. seed az-table-catalog 1.0.1: {args.seed_records} inserts, {args.seed_threads} threads")
        cpu = Cpu({"azurite": az_pid, "bench": os.getpid()})
        seed_res = seed_inserts(conn, f"hb{run}seed", backlog_records[args.warmup:args.warmup + args.seed_records],
                                latency_warm, args.seed_threads)
        cpu_notes.append("5, seed inserts: " + cpu.stop().per(len(seed_res.latencies), "record"))

        # Storage requests per operation, counted on the same service code in this process.
        say("counting storage requests per operation (in-process, same service code)")
        counts = count_requests(conn, f"hb{run}count", make_records(2 + args.bulk_size, f"C{run}", rng),
                                args.bulk_size)

        # -- the table ------------------------------------------------------------------------------
        ratio, ratio_b = m_a.rate / m_a.plain_rate, m_b.rate / m_b.plain_rate
        seed_ratio = ingest_at_8 / seed_res.rate
        report.rows.append(Row(
            "1b", "single-record ingest while the queue trigger applies (context, not a target)", "8 clients",
            f"{len(steady.latencies)} req", f"{steady.rate:.0f} req/s", ms(percentile(steady.latencies, .5)),
            ms(percentile(steady.latencies, .99))))
        report.rows.append(Row(
            "2", f"bulk ingest, `POST /api/records` arrays of {args.bulk_size} (queue trigger off)",
            f"{args.bulk_clients} clients", f"{args.bulk_requests} req = {args.bulk_requests * args.bulk_size} rec",
            f"**{bulk.rate * args.bulk_size:.0f} rec/s** ({bulk.rate:.1f} req/s)",
            ms(percentile(bulk.latencies, .5)), ms(percentile(bulk.latencies, .99))))
        report.rows.append(Row(
            "3", f"202 → `applied` seen by `GET /api/operations/{{id}}` (next GET {args.poll_ms:g} ms after each "
                 f"answer; open-loop {args.latency_rate:g} ops/s)", "1 client per op", f"{len(observed)} ops", "",
            f"**{ms(percentile(observed, .5))}**", f"**{ms(percentile(observed, .99))}**",
            f"server-side accepted→finished p50 {ms(percentile(server, .5))} / p99 {ms(percentile(server, .99))} ms; "
            f"{gets / len(observed):.1f} GETs per op"))
        report.rows.append(Row(
            "4a", "materialize single-record ops (queue trigger drains the backlog of single-record POSTs; "
                  "concurrent ones share a message by group commit)",
            f"≤ {apply_threads} in flight (avg {m_a.in_flight:.1f} running)",
            f"{singles_ops} ops in {messages_a} messages = {single_entities} entities",
            f"**{m_a.rate:.0f} entities/s** ({singles_ops / m_a.seconds:.0f} ops/s, {m_a.seconds:.1f} s)", "", "",
            f"plain `upsert_entity`, {apply_threads} threads: {m_a.plain_rate:.0f} entities/s → **{ratio:.0%}**; "
            f"{m_a.cpu_pair}",
            f"≥ 70%: {'met' if ratio >= 0.7 else 'MISSED'}"))
        report.rows.append(Row(
            "4b", f"materialize bulk ops (queue trigger drains a backlog of {args.bulk_size}-record messages)",
            f"≤ {apply_threads} in flight (avg {m_b.in_flight:.1f} running)",
            f"{bulk_ops} ops = {bulk_entities} entities",
            f"**{m_b.rate:.0f} entities/s** ({m_b.seconds:.1f} s)", "", "",
            f"plain `upsert_entity`, {apply_threads} threads: {m_b.plain_rate:.0f} entities/s → **{ratio_b:.0%}**; "
            f"{m_b.cpu_pair}",
            f"≥ 70%: {'met' if ratio_b >= 0.7 else 'MISSED'}"))
        report.rows.append(Row(
            "5", "seed az-table-catalog 1.0.1 `insert` (applied before it returns)",
            f"{args.seed_threads} threads", f"{len(seed_res.latencies)} rec", f"**{seed_res.rate:.0f} rec/s**",
            ms(percentile(seed_res.latencies, .5)), ms(percentile(seed_res.latencies, .99)),
            f"single-record ingest at 8 clients ÷ seed at 8 threads = **{seed_ratio:.1f}×**",
            f"≥ 3×: {'met' if seed_ratio >= 3 else 'MISSED'}"))

        version_after = code_version()
        print(f"code measured: {version_before}" + ("" if version_after == version_before else
                                                     f" at the start, {version_after} at the end"))
        print(f"Azurite {azurite_version} (--location, a single Node.js thread); {os.cpu_count()} cores shared by "
              f"Azurite, the host subprocess and this script; load average before {load_before[0]:.2f}, "
              f"after {os.getloadavg()[0]:.2f}")
        if args.tcp_nodelay:
            print("EXPERIMENT --tcp-nodelay: the host ran with TCP_NODELAY set on its HTTP sockets from outside "
                  "(not what `python -m catalog serve` does today)")
        print(f"N per level = {args.n} (after {args.warmup} warm-up POSTs); levels {args.levels}; bulk "
              f"{args.bulk_requests} x {args.bulk_size} records; host.json batchSize {queue_opts.batch_size} + "
              f"newBatchThreshold {queue_opts.threshold} = at most {apply_threads} messages in flight\n")
        print(report.table())
        print("\nStorage requests per operation (counted in-process on the same service code). The host adds, per "
              f"queue message, 1 delete and 1/{queue_opts.batch_size} of a receive:")
        for name, c in counts.items():
            print(f"- {name}: {describe_counts(c)}")
        print(f"- plain fan-out: {len(INDEX_KEYS)} upsert_entity per record, nothing else")
        print("\nCPU per unit of work (/proc; busy = CPU seconds / wall seconds, 100% = one core):")
        for note in cpu_notes:
            print(f"- {note}")
        print(f"- the dev host's floor: `GET /admin/host/status` (no function, no storage), 1 client: p50 "
              f"{ms(percentile(floor, .5))} ms, p99 {ms(percentile(floor, .99))} ms")
        host_warnings = sum(h.log_count("Connection pool is full") for h in hosts)
        print("\nurllib3 'Connection pool is full' warnings (more concurrent requests than a client's pooled "
              "connections, "
              f"so extra connections are opened and dropped): host {host_warnings}, plain upserts "
              f"{pool_warnings.count}")
        print(f"whole run: {time.perf_counter() - started:.0f} s")
        return 0
    except BaseException:
        failed = True
        for h in hosts:
            if h.proc is not None and h.proc.poll() is None:
                say(f"--- host log ({h.log_path.name}), tail:\n{h.tail()}")
        raise
    finally:
        for h in hosts:
            h.stop()
        azurite.stop(grace=10)
        signal.signal(signal.SIGTERM, previous_term)
        pool_warnings.uninstall()
        if args.keep or failed:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
