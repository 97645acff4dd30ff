"""Fixtures for integration tests: dev hosts running the toy function app against the session Azurite."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.helpers import unique

TOY_APP = Path(__file__).resolve().parent.parent / "fixtures" / "toy_function_app.py"

# Fast retries for tests; everything else keeps the host's defaults.
TEST_QUEUES = {"visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.500",
               "maxDequeueCount": 3, "batchSize": 4}
NEVER = "0 0 0 1 1 *"  # a timer schedule that does not fire during a test


def toy_queue_name() -> str:
    return "toy-" + uuid.uuid4().hex[:12]


@pytest.fixture
def toy_host(storage_connection, tmp_path):
    """``toy_host(queues={...}, settings={...}, **DevHost kwargs)`` starts a toy app host; all stop at the end."""
    from devhost import DevHost

    hosts = []

    def start(queues: dict | None = None, settings: dict | None = None, **kwargs) -> DevHost:
        host_json = tmp_path / f"host-{len(hosts)}.json"
        host_json.write_text(json.dumps(
            {"version": "2.0", "extensions": {"queues": {**TEST_QUEUES, **(queues or {})}}}))
        merged = {"AzureWebJobsStorage": storage_connection, "TOY_QUEUE": toy_queue_name(),
                  "TOY_TIMER_SCHEDULE": NEVER, **(settings or {})}
        kwargs.setdefault("app", TOY_APP)
        host = DevHost(kwargs.pop("app"), port=0, host_json=host_json, settings=merged,
                       settings_file=tmp_path / "no-local-settings.json", **kwargs)
        hosts.append(host)
        return host.start()

    yield start
    for h in hosts:
        h.stop()


@pytest.fixture
def env(storage_connection):
    """App settings (docs/architecture.md §11) for a fresh catalog on the session's Azurite: what the CLI reads."""
    return {"AzureWebJobsStorage": storage_connection, "CATALOG_TABLE": unique("t"),
            "CATALOG_INDEX_KEYS": "sku,category", "CATALOG_ROW_KEY": "name"}
