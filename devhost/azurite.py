"""Start and stop the pinned Azurite (node_modules/.bin/azurite) for tests and local runs."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's fixed development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def stop_process_group(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM a process started with start_new_session=True and its children; SIGKILL after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class AzuriteError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class Endpoints:
    blob_port: int
    queue_port: int
    table_port: int
    host: str = "127.0.0.1"

    @property
    def connection_string(self) -> str:
        h = self.host
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://{h}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://{h}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://{h}:{self.table_port}/{DEV_ACCOUNT};"
        )


class Azurite:
    """One Azurite process. Persists to a folder (not --inMemoryPersistence: its queue GC stalls)."""

    def __init__(self, location: Path, endpoints: Endpoints | None = None, log: Path | None = None):
        self.location = Path(location)
        self.endpoints = endpoints or Endpoints(free_port(), free_port(), free_port())
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise AzuriteError(
                f"{AZURITE_BIN} not found: run scripts/bootstrap (it runs npm ci for the pinned Azurite)"
            )
        if shutil.which("node") is None:
            raise AzuriteError("node is not on PATH: Azurite needs Node.js")
        self.location.mkdir(parents=True, exist_ok=True)
        e = self.endpoints
        args = [
            str(AZURITE_BIN), "--silent", "--skipApiVersionCheck", "--disableTelemetry",
            "--location", str(self.location),
            "--blobHost", e.host, "--blobPort", str(e.blob_port),
            "--queueHost", e.host, "--queuePort", str(e.queue_port),
            "--tableHost", e.host, "--tablePort", str(e.table_port),
        ]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        ports = [e.blob_port, e.queue_port, e.table_port]
        while not all(port_open(p, e.host) for p in ports):
            if self.proc.poll() is not None:
                raise AzuriteError(f"Azurite exited with {self.proc.returncode} before listening on {ports}")
            if time.monotonic() > deadline:
                self.stop()
                raise AzuriteError(f"Azurite did not listen on {ports} within {timeout:.0f}s")
            time.sleep(0.1)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL: Azurite can take 20-40 s to exit on SIGTERM."""
        stop_process_group(self.proc, grace)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Azurite's well-known ports, which "UseDevelopmentStorage=true" points at.
DEFAULT_ENDPOINTS = Endpoints(blob_port=10000, queue_port=10001, table_port=10002)


def start_or_reuse(location: Path, endpoints: Endpoints = DEFAULT_ENDPOINTS,
                   log: Path | None = None) -> Azurite | None:
    """Start Azurite on ``endpoints`` unless something already listens on all three ports.

    Returns the started Azurite (the caller stops it) or None when an existing one is reused.
    """
    ports = [endpoints.blob_port, endpoints.queue_port, endpoints.table_port]
    busy = [p for p in ports if port_open(p, endpoints.host)]
    if len(busy) == len(ports):
        return None
    if busy:
        raise AzuriteError(
            f"ports {busy} on {endpoints.host} are in use but not all of {ports}: "
            "something other than Azurite may be listening; stop it or free those ports")
    return Azurite(location, endpoints, log=log).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m devhost.azurite``: run Azurite in the foreground until Ctrl-C / SIGTERM."""
    import argparse
    import sys
    import threading

    parser = argparse.ArgumentParser(prog="python -m devhost.azurite", description=main.__doc__)
    parser.add_argument("--location", default=".azurite", help="data folder (default: .azurite)")
    parser.add_argument("--default-ports", action="store_true",
                        help="listen on 10000-10002 (UseDevelopmentStorage=true), reusing a running "
                             "Azurite there; without it, free ports are picked")
    args = parser.parse_args(argv)
    location = Path(args.location)
    try:
        if args.default_ports:
            az = start_or_reuse(location, log=location / "azurite.log")
            endpoints = DEFAULT_ENDPOINTS
        else:
            az = Azurite(location, log=location / "azurite.log").start()
            endpoints = az.endpoints
    except AzuriteError as e:
        print(f"azurite: {e}", file=sys.stderr)
        return 1
    if az is None:
        print(f"azurite: already listening on {endpoints.host}:10000-10002; reusing it")
        return 0
    print(f"azurite: running, data in {location}\n{endpoints.connection_string}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if az.proc is not None and az.proc.poll() is not None:
            print(f"azurite: exited with {az.proc.returncode}", file=sys.stderr)
            return 1
    az.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
