"""The same hostile requests as tests/integration/test_hostile_input.py, over a real socket to the dev
host serving the real function_app.py (queue and timer triggers off, so the queue can be counted),
and a storage outage behind it: 503 without the endpoint, nothing half-written."""
from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from catalog.bootstrap import build_service
from catalog.settings import Settings
from tests.conftest import APP_SCHEMA_ENV, unique_name
from tests.e2e.conftest import ROOT
from tests.hostile import CASES, JSON, Hostile, StorageCounts, check_problem


class SwitchableProxy:
    """A TCP forwarder to Azurite that can be cut: while down, every connection is reset at once."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.down = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture(scope="module")
def proxy(azurite):
    p = SwitchableProxy(azurite.endpoints.table_port)
    yield p
    p.close()


@pytest.fixture(scope="module")
def host(storage_connection, tmp_path_factory):
    """The real app on the dev host, on the session's Azurite; queue and timers off."""
    from devhost import DevHost

    table = unique_name("t")
    settings = {"AzureWebJobsStorage": storage_connection, "CATALOG_TABLE": table, "CATALOG_QUEUE": f"{table}-wal",
                "CATALOG_SWEEP_SCHEDULE": "0 0 0 1 1 *", **APP_SCHEMA_ENV}
    h = DevHost(app=str(ROOT / "function_app.py"), app_dir=ROOT, settings=settings,
                settings_file=tmp_path_factory.mktemp("h") / "missing.json", port=0, queues=False, timers=False)
    h.start()
    h.settings = settings
    r = requests.post(h.url("records"), json={"sku": "a", "category": "c", "name": "seed"}, timeout=30)
    assert r.status_code == 202
    build_service(Settings.from_env(settings)).recover()  # the seed record, applied
    yield h
    h.stop()


@pytest.fixture
def counts(host, storage_connection):
    return StorageCounts(storage_connection, host.settings["CATALOG_TABLE"], host.settings["CATALOG_QUEUE"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_request_over_the_socket_is_a_clean_4xx_and_writes_nothing(host, counts, case: Hostile):
    before = counts()
    r = requests.request(case.method, host.url(case.route), params=case.params, data=case.body or None,
                         headers=case.headers, timeout=60)
    r.content.decode("utf-8")
    check_problem(case, r.status_code, r.headers.get("Content-Type", ""), r.json())
    assert counts() == before


def test_a_delete_that_matches_nothing_over_the_socket_writes_nothing(host, counts):
    before = counts()
    r = requests.delete(host.url("records"), params={"sku": "none"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"operation": None, "status": "applied", "matched": 0}
    assert counts() == before


def test_a_storage_outage_over_the_socket_is_a_503_without_the_endpoint(storage_connection, proxy, tmp_path, azurite):
    from devhost import DevHost

    table = unique_name("t")
    through_proxy = storage_connection.replace(f":{azurite.endpoints.table_port}/", f":{proxy.port}/")
    assert through_proxy != storage_connection
    settings = {"AzureWebJobsStorage": through_proxy, "CATALOG_TABLE": table, "CATALOG_QUEUE": f"{table}-wal",
                "CATALOG_SWEEP_SCHEDULE": "0 0 0 1 1 *", **APP_SCHEMA_ENV}
    counts = StorageCounts(storage_connection, table, f"{table}-wal")
    with DevHost(app=str(ROOT / "function_app.py"), app_dir=ROOT, settings=settings,
                 settings_file=tmp_path / "missing.json", port=0, queues=False, timers=False) as h:
        assert requests.get(h.url("records"), params={"sku": "a"}, timeout=30).status_code == 200  # tables made
        before = counts()
        proxy.cut()
        r = requests.post(h.url("records"), data=json.dumps({"sku": "a", "category": "c", "name": "n"}),
                          headers=JSON, timeout=120)
        q = requests.get(h.url("records"), params={"sku": "a"}, timeout=120)
    for resp in (r, q):
        assert resp.status_code == 503 and resp.headers["Retry-After"], resp.text
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        for secret in (str(proxy.port), "127.0.0.1", "devstoreaccount1", table):
            assert secret not in resp.text, (secret, resp.text)
    assert counts() == before
