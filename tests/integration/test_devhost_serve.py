"""``python -m catalog serve`` as a user runs it: settings file, function list, requests, shutdown."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devhost.azurite import AzuriteError, Endpoints, free_port, start_or_reuse
from tests.helpers import wait_until
from tests.integration.conftest import TOY_APP, toy_queue_name

ROOT = Path(__file__).resolve().parents[2]


def serve(args: list[str], log: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AzureWebJobsStorage", "TOY_QUEUE", "TOY_TIMER_SCHEDULE")}
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "catalog", "serve", *args], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def test_serve_runs_the_app_until_sigterm(storage_connection, tmp_path):
    port = free_port()
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "AzureWebJobsStorage": storage_connection, "TOY_QUEUE": "from-file",
        "TOY_TIMER_SCHEDULE": "*/1 * * * * *"}, "Host": {"LocalHttpPort": port}}))
    env_queue = toy_queue_name()
    log = tmp_path / "serve.log"
    proc = serve(["--app", str(TOY_APP), "--settings", str(settings), "--max-polling-interval", "1"], log,
                 {"TOY_QUEUE": env_queue})  # the environment beats local.settings.json
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                return requests.get(base + "/admin/host/status", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=30, what="serve to listen")
        assert requests.get(base + "/api/hello/cli").text == "Hello, cli!"
        wait_until(lambda: "Executed 'Functions.tick' (Succeeded" in log.read_text(), timeout=10,
                   what="a timer invocation in the log")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert f"hello: [GET] {base}/api/hello/{{name}}" in out
    assert f"consume: queueTrigger ({env_queue})" in out
    assert "reserved_route: [error]" in out
    assert f"listening on {base}" in out
    assert '"GET /api/hello/cli" 200' in out  # one line per request


def test_serve_names_a_missing_setting(tmp_path):
    log = tmp_path / "serve.log"
    proc = serve(["--app", str(TOY_APP), "--settings", str(tmp_path / "absent.json"), "--port", "0"], log,
                 {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TOY_TIMER_SCHEDULE": "0 0 0 1 1 *"})
    assert proc.wait(timeout=30) == 1
    assert "'%TOY_QUEUE%' does not resolve to a value: app setting TOY_QUEUE is not set" in log.read_text()


def test_serve_reports_a_missing_app(tmp_path):
    log = tmp_path / "serve.log"
    proc = serve(["--app", str(tmp_path / "nothing.py")], log)
    assert proc.wait(timeout=30) == 1
    assert "does not exist" in log.read_text()


def test_start_or_reuse_reuses_a_running_azurite(azurite, tmp_path):
    assert start_or_reuse(tmp_path, azurite.endpoints) is None
    partly_busy = Endpoints(azurite.endpoints.blob_port, free_port(), free_port())
    with pytest.raises(AzuriteError, match="in use but not all"):
        start_or_reuse(tmp_path, partly_busy)
