"""Failure paths through the dev host running the real function_app.py: a message whose entry cannot be
applied is retried, reaches the poison queue after maxDequeueCount, its operation reads failed, and
other messages keep flowing."""
import base64
import json

import pytest
import requests
from azure.storage.queue import QueueClient

from catalog.bootstrap import build_service
from catalog.settings import Settings
from catalog.wal import PendingEntry
from tests.conftest import APP_SCHEMA_ENV, unique_name
from tests.e2e.conftest import ROOT
from tests.helpers import wait_until


@pytest.fixture
def host(storage_connection, tmp_path):
    from devhost import DevHost

    table = unique_name("t")
    settings = {"AzureWebJobsStorage": storage_connection, "CATALOG_TABLE": table,
                "CATALOG_QUEUE": f"{table}-wal", "CATALOG_SWEEP_SCHEDULE": "0 0 0 1 1 *", **APP_SCHEMA_ENV}
    host_json = json.loads((ROOT / "host.json").read_text())
    # Fast retries so the test does not wait out 5 x 10 s; the retry *rule* is the host's.
    host_json["extensions"]["queues"].update({"visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.200"})
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    h = DevHost(app=str(ROOT / "function_app.py"), app_dir=ROOT, settings=settings,
                settings_file=tmp_path / "missing.json", host_json=tmp_path / "host.json", port=0, timers=False)
    h.start()
    h.settings = settings
    yield h
    h.stop()


def test_poisoned_operation_is_marked_failed_and_others_flow(host, storage_connection):
    service = build_service(Settings.from_env(host.settings))
    bad, _ = service.wal.new_operation_id()
    entities = service.wal.entry_entities(bad, [PendingEntry("put", b'{"sku": "no category"}')])
    service.wal.append([*entities, service.wal.header_entity(bad, 1, "put")])
    queue = QueueClient.from_connection_string(storage_connection, service.queue.name)
    queue.send_message(base64.b64encode(json.dumps({"op": bad}).encode()).decode())

    good = [requests.post(host.url("records"), json={"sku": f"g{i}", "category": "c", "name": "n"}, timeout=10)
            for i in range(5)]
    assert all(r.status_code == 202 for r in good)

    def op_status(op):
        return requests.get(host.url(f"operations/{op}"), timeout=10).json()

    wait_until(lambda: all(op_status(r.json()["operation"])["status"] == "applied" for r in good),
               timeout=60, what="the good operations to be applied")
    failed = wait_until(lambda: (s := op_status(bad))["status"] == "failed" and s, timeout=90,
                        what="the poisoned operation to read failed")
    assert "missing required fields 'category', 'name'" in failed["error"]
    health = requests.get(host.url("health"), timeout=10).json()
    assert health["failed_operations"] == 1 and health["latest_failures"][0]["operation"] == bad
    poison = QueueClient.from_connection_string(storage_connection, service.poison_queue.name)
    wait_until(lambda: not list(poison.peek_messages()), timeout=30, what="the poison queue to drain")
    assert len(requests.get(host.url("records"), params={"category": "c"}, timeout=10).json()["items"]) == 5
