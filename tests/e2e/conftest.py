"""End-to-end fixtures: the real function_app.py served by `python -m catalog serve` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devhost.azurite import free_port
from tests.conftest import APP_SCHEMA_ENV, unique_name
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


class ServedApp:
    """`python -m catalog serve` on a free port against the session's Azurite."""

    def __init__(self, storage_connection: str, log_path: Path, **settings: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api"
        self.table = settings.get("CATALOG_TABLE") or unique_name("t")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "AzureWebJobsStorage"))}
        # The Functions host resolves %CATALOG_QUEUE% / %CATALOG_SWEEP_SCHEDULE% only from settings that
        # exist, so they are set explicitly, as local.settings.json.example and the Bicep do.
        env.update({"AzureWebJobsStorage": storage_connection, "CATALOG_TABLE": self.table,
                    "CATALOG_QUEUE": f"{self.table.lower()}-wal", "CATALOG_SWEEP_SCHEDULE": "0 */1 * * * *",
                    **APP_SCHEMA_ENV, **settings})
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "catalog", "serve", "--port", str(self.port),
             "--settings", str(log_path.parent / "no-local-settings.json")],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._ready, timeout=60, what="the dev host to answer /api/health")
        except AssertionError:
            self.stop()
            raise AssertionError(f"dev host did not start; its log:\n{log_path.read_text()[-4000:]}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dev host exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            return requests.get(f"{self.base}/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def url(self, route: str) -> str:
        return f"{self.base}/{route}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def served(storage_connection, tmp_path_factory):
    app = ServedApp(storage_connection, tmp_path_factory.mktemp("serve") / "host.log")
    yield app
    app.stop()
