"""An Idempotency-Key outlives the process that first saw it: the dev host is stopped and a new one
started on the same tables, and the repeat still gets the first operation and writes nothing."""
from __future__ import annotations

import requests
from azure.data.tables import TableServiceClient

from tests.conftest import unique_name
from tests.e2e.conftest import ServedApp


def wal_rows(storage_connection: str, wal_table: str) -> int:
    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(wal_table)
    return sum(1 for _ in table.list_entities())


def test_a_key_survives_a_restart_of_the_host(storage_connection, tmp_path):
    table = unique_name("t")
    body = [{"sku": "r1", "category": "c", "name": "n"}, {"sku": "r2", "category": "c", "name": "n"}]
    headers = {"Idempotency-Key": "order-4711"}
    first_host = ServedApp(storage_connection, tmp_path / "first.log", CATALOG_TABLE=table)
    try:
        first = requests.post(first_host.url("records"), json=body, headers=headers, timeout=30)
    finally:
        first_host.stop()
    assert first.status_code == 202
    written = wal_rows(storage_connection, f"{table}wal")
    second_host = ServedApp(storage_connection, tmp_path / "second.log", CATALOG_TABLE=table)
    try:
        again = requests.post(second_host.url("records"), json=body, headers=headers, timeout=30)
        other = requests.post(second_host.url("records"), json=body[:1], headers=headers, timeout=30)
    finally:
        second_host.stop()
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert other.status_code == 422 and other.headers["Content-Type"].startswith("application/problem+json")
    assert wal_rows(storage_connection, f"{table}wal") == written
