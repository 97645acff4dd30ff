"""The seed-compatible library API on a real Azurite: the seed's failures must not survive here."""
import pytest

import catalog
from catalog import TableCatalogClient
from catalog.client import SchemaLockedError, reset
from catalog.errors import RecordTooLargeError, SchemaMismatchError, ValidationError
from catalog.wal import SHARDS, shard_partition
from tests.helpers import unique, wait_until


@pytest.fixture
def client(storage_connection):
    return TableCatalogClient(storage_connection, unique("t"), None, "sku,category", "name")


def wal_entries(c: TableCatalogClient) -> list:
    store, table = c.service.wal.store, c.service.wal.table
    return [e for s in range(SHARDS) for e in store.query(table, shard_partition(s))]


@pytest.mark.parametrize("value", ["a/b", "back\\slash", "hash#tag", "what?", "O'Brien", "ctl\x01char",
                                   "tab\tnl\n", "x' or PartitionKey ne '", "日本 🙂", "%2F%3F"])
def test_any_string_value_inserts_and_queries(client, value):
    record = {"sku": value, "category": value, "name": value, "n": 1}
    client.insert(record)
    client.insert({"sku": "other", "category": "other", "name": "z"})
    assert client.query({"sku": value}) == [record]
    assert client.query({"category": value, "sku": value}) == [record]
    assert client.query({"sku": value}, row_from=value, row_to=value) == [record]


def test_reserved_and_structured_fields_round_trip(client):
    record = {"sku": "s1", "category": "c", "name": "n", "operation": "delete", "PartitionKey": "pk",
              "RowKey": "rk", "Timestamp": "2020-01-01", "etag": "W/x", "odata.etag": 1,
              "nested": {"list": [1, 2.5, None, True, {"deep": "日本"}]}, "big": 2 ** 100, "empty": {}}
    client.insert(record)
    assert client.query({"sku": "s1"}) == [record]
    assert client.query({"category": "c"}) == [record]


def test_reinsert_with_new_payload_replaces(client):
    client.insert({"sku": "s", "category": "c", "name": "n", "price": 1})
    client.insert({"sku": "s", "category": "c", "name": "n", "price": 2})
    assert client.query({"sku": "s"}) == [{"sku": "s", "category": "c", "name": "n", "price": 2}]
    assert client.query({"category": "c"}) == [{"sku": "s", "category": "c", "name": "n", "price": 2}]


def test_delete_by_filter_removes_from_every_index(client):
    for i in range(3):
        client.insert({"sku": f"s{i}", "category": "shared", "name": f"n{i}"})
    client.insert({"sku": "s1", "category": "other", "name": "keep"})
    assert client.delete({"category": "shared"}, row_from="n1") == 2
    assert [r["name"] for r in client.query({"category": "shared"})] == ["n0"]
    assert client.query({"sku": "s1"}) == [{"sku": "s1", "category": "other", "name": "keep"}]
    assert client.query({"sku": "s2"}) == []
    assert client.delete({"sku": "nothing"}) == 0


def test_too_long_key_is_refused_before_the_wal_and_the_next_insert_works(client):
    before = len(wal_entries(client))
    with pytest.raises(ValidationError, match="too long"):
        client.insert({"sku": "x" * 600, "category": "c", "name": "n"})
    assert len(wal_entries(client)) == before
    client.insert({"sku": "ok", "category": "c", "name": "n"})
    assert client.query({"sku": "ok"})[0]["name"] == "n"
    assert client.recover().failed == 0


def test_record_size_limit_is_azures_not_azurites(client):
    near = {"sku": "big", "category": "c", "name": "n", "blob": "x" * 1_040_000}
    client.insert(near)
    assert client.query({"sku": "big"}) == [near]
    with pytest.raises(RecordTooLargeError):
        client.insert({"sku": "big2", "category": "c", "name": "n", "blob": "x" * 1_050_000})


def test_missing_fields_and_non_objects_are_refused(client):
    with pytest.raises(ValidationError, match="'category'"):
        client.insert({"sku": "s", "name": "n"})
    with pytest.raises(ValidationError, match="JSON object"):
        client.insert(["not", "an", "object"])


def test_second_client_with_another_schema_is_refused(storage_connection):
    table = unique("t")
    TableCatalogClient(storage_connection, table, None, "sku,category", "name")
    with pytest.raises(SchemaMismatchError) as e:
        TableCatalogClient(storage_connection, table, None, "sku", "name")
    assert "['sku', 'category']" in str(e.value) and "['sku']" in str(e.value)
    TableCatalogClient(storage_connection, table, None, ["sku", "category"], "name")  # same schema: fine


def test_default_wal_name_is_a_valid_table(storage_connection):
    c = TableCatalogClient(storage_connection, unique("t"), None, "sku", "name")
    assert c.service.wal.table == c.service.index.table + "wal"


def test_configure_is_locked_like_the_seed(client):
    with pytest.raises(RuntimeError):
        client.configure("a", "b")
    with pytest.raises(SchemaLockedError):
        client.configure("a", "b")


def test_module_functions_with_the_seed_environment_names(storage_connection, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", storage_connection)
    monkeypatch.setenv("TABLE_CATALOG_NAME", unique("t"))
    monkeypatch.setenv("TABLE_CATALOG_INDEX_KEYS", "sku,category")
    monkeypatch.setenv("TABLE_CATALOG_ROW_KEY", "name")
    reset()
    try:
        catalog.insert({"sku": "m", "category": "c", "name": "n"})
        assert catalog.query({"sku": "M"}) == [{"sku": "m", "category": "c", "name": "n"}]
        assert catalog.delete({"sku": "m"}) == 1
        assert catalog.query({"sku": "m"}) == []
        assert catalog.recover().failed == 0
    finally:
        reset()


def test_module_configure_then_use(storage_connection):
    reset()
    try:
        catalog.configure("sku", "name", connection_string=storage_connection, table_name=unique("t"))
        with pytest.raises(RuntimeError):
            catalog.configure("sku", "name")
        catalog.insert({"sku": "a", "name": "b"})
        assert catalog.query({"sku": "a"}) == [{"sku": "a", "name": "b"}]
    finally:
        reset()


def test_case_insensitive_default_and_case_sensitive_option(storage_connection):
    loose = TableCatalogClient(storage_connection, unique("t"), None, "sku", "name")
    loose.insert({"sku": "AbC", "name": "n"})
    assert len(loose.query({"sku": "abc"})) == 1
    strict = TableCatalogClient(storage_connection, unique("t"), None, "sku", "name", case_sensitive=True)
    strict.insert({"sku": "AbC", "name": "n"})
    assert strict.query({"sku": "abc"}) == [] and len(strict.query({"sku": "AbC"})) == 1


def test_recover_from_a_time_replays_into_a_wiped_index(client, storage_connection):
    for i in range(5):
        client.insert({"sku": f"s{i}", "category": "c", "name": f"n{i}"})
    client.delete({"sku": "s0"})
    from azure.data.tables import TableServiceClient

    index = client.service.index
    TableServiceClient.from_connection_string(storage_connection).delete_table(index.table)  # the wipe
    index.create()
    assert client.query({"category": "c"}) == []
    result = client.recover("2000-01-01T00:00:00")
    assert result.entries == 6 and result.failed == 0
    assert [r["name"] for r in client.query({"category": "c"})] == ["n1", "n2", "n3", "n4"]


def test_a_new_index_table_on_a_used_wal_must_be_built_first(storage_connection):
    from catalog.errors import IndexNotBuiltError

    table, wal = unique("t"), unique("w")
    first = TableCatalogClient(storage_connection, table, wal, "sku,category", "name")
    first.insert({"sku": "s", "category": "c", "name": "n"})
    with pytest.raises(IndexNotBuiltError, match="reindex"):
        TableCatalogClient(storage_connection, unique("t"), wal, "sku,category,colour", "name")
    assert set(first.service.wal.schema_locks()) == {table.lower()}


def test_library_inserts_take_one_wal_write_and_batch_their_status_marks(client):
    before = len(wal_entries(client))
    for i in range(5):
        client.insert({"sku": f"m{i}", "category": "marks", "name": "n"})
    entries = wal_entries(client)
    assert len(entries) - before == 5  # one entity per single-record operation: entry and status together
    assert len({e["PartitionKey"] for e in entries[before:]}) == 1  # one shard per client: marks batch up
    assert len(client.query({"category": "marks"})) == 5  # applied before insert returned
    # The marks are written by the buffer's writer thread, without another insert or close().
    wait_until(lambda: client.service.health()["pending"] == 0, what="status marks written")
    assert client.recover().operations == 0  # nothing left for the sweep to redo


@pytest.mark.parametrize("record, field", [
    ({"sku": "a", "category": "c", "name": "n", "note": "\ud800"}, "note"),
    ({"sku": "\udfff", "category": "c", "name": "n"}, "sku"),
    ({"sku": float("inf"), "category": "c", "name": "n"}, "sku"),
    ({"sku": "a", "category": "c", "name": float("nan")}, "name"),
    ({"sku": "a", "category": "c", "name": "n", "price": float("-inf")}, "price"),
])
def test_the_library_refuses_what_the_http_edge_refuses_and_writes_nothing(client, record, field):
    with pytest.raises(ValidationError) as e:
        client.insert(record)
    assert e.value.field == field
    with pytest.raises(ValidationError):
        client.insert_many([{"sku": "ok", "category": "c", "name": "n"}, record])
    assert wal_entries(client) == []
    with pytest.raises(ValidationError):
        client.query({"sku": "x" * 600})
    assert client.delete({"sku": "nothing"}) == 0 and wal_entries(client) == []


def test_insert_many_is_one_logged_operation_applied_before_it_returns(client):
    records = [{"sku": f"m{i}", "category": "many", "name": f"n{i}"} for i in range(3)]
    op_id = client.insert_many(records)
    assert client.query({"category": "many"}) == records  # applied when it returned
    client.close()  # the library's status marks are buffered until then
    assert client.service.operation(op_id)["status"] == "applied"
    assert client.service.operation(op_id)["records"] == 3


def test_a_wal_written_with_another_shard_count_is_refused(client, storage_connection):
    from catalog.errors import WalLayoutError

    client.insert({"sku": "a", "category": "c", "name": "n"})
    wal = client.service.wal
    lock = wal.store.get(wal.table, "meta", f"schema-{client.service.index.table.lower()}")
    wal.store.merge(wal.table, {"PartitionKey": "meta", "RowKey": lock["RowKey"], "shards": SHARDS * 2})
    with pytest.raises(WalLayoutError, match=f"written with {SHARDS * 2} shards"):
        TableCatalogClient(storage_connection, client.service.index.table, None, "sku,category", "name")


def test_a_library_insert_writes_its_history_row_with_its_mark_and_the_sweep_covers_a_lost_one(storage_connection):
    from datetime import timedelta

    from catalog import codec
    from catalog.keys import record_keys

    client = TableCatalogClient(storage_connection, unique("t"), index_keys="sku,category", row_key="name")
    svc = client.service
    record = {"sku": "h", "category": "c", "name": "n"}
    client.insert(record)  # applied before it returns; its history row waits with its status mark
    keys = record_keys(svc.schema, record)
    client.close()  # the buffer is written: history row, then the mark
    [version] = svc.index.history(keys)
    assert codec.decode_payload(version) == record
    # An insert whose buffered mark and history row die with the process: the sweep finds the row
    # missing, applies the operation again (a no-op on the index) and writes it, then the mark.
    again = dict(record, v=2)
    client.insert(again)
    assert svc.marks.discard() == 1
    assert [codec.decode_payload(v) for v in svc.index.history(keys)] == [record]
    result = svc.sweep(svc.wal.clock() + timedelta(hours=1))
    assert result.operations == 1 and result.changed == 0
    assert [codec.decode_payload(v) for v in svc.index.history(keys)] == [record, again]
    assert client.history(record)[-1].record == again
