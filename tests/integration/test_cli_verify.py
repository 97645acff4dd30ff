"""`catalog verify` on a real Azurite: finds missing, extra and stale index entities; --repair fixes them."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from catalog import codec
from catalog.bootstrap import build_service
from catalog.index import STAMP, TOMBSTONE
from catalog.keys import partition_key, record_keys
from catalog.settings import Settings
from catalog.store import Entity
from catalog.tools.cli import main


@pytest.fixture
def run(env, tmp_path, capsys):
    def call(*args: str):
        code = main(list(args), env=env, cwd=tmp_path)
        out, err = capsys.readouterr()
        return code, json.loads(out) if "--json" in args else out
    return call


@pytest.fixture
def svc(env):
    return build_service(Settings.from_env(env))


def entity(svc, record, field):
    keys = record_keys(svc.schema, record)
    pk = keys.partition_keys[svc.schema.index_keys.index(field)]
    return svc.wal.store.get(svc.index.table, pk, keys.row_key)


def put_back(svc, old: Entity) -> None:
    """Overwrite the index entity with an earlier copy of itself (a lost or out-of-order write)."""
    current = svc.wal.store.get(svc.index.table, old["PartitionKey"], old["RowKey"])
    svc.wal.store.replace(svc.index.table, dict(old), current.etag)


def test_verify_finds_missing_extra_and_stale_and_repair_makes_it_clean(run, svc):
    store, table = svc.wal.store, svc.index.table
    lost = {"sku": "lost", "category": "c", "name": "1"}
    changed_v1 = {"sku": "changed", "category": "c", "name": "2", "v": 1}
    changed_v2 = dict(changed_v1, v=2)
    deleted = {"sku": "deleted", "category": "c", "name": "3"}
    svc.submit([lost, changed_v1, deleted], apply_now=True)
    v1_entity = entity(svc, changed_v1, "sku")
    live_deleted = entity(svc, deleted, "category")
    svc.submit([changed_v2], apply_now=True)
    svc.delete({"sku": "deleted"}, apply_now=True)
    code, report = run("verify", "--json")
    assert code == 0 and report["drift"] == 0 and report["identities"] == 3

    # Break the index three ways (four entities):
    lost_entity = entity(svc, lost, "category")
    store.delete(table, lost_entity["PartitionKey"], lost_entity["RowKey"])          # missing
    put_back(svc, v1_entity)                                                          # stale: old version
    put_back(svc, live_deleted)                                                       # stale: deleted, shown again
    ghost = {"sku": "ghost", "category": "c", "name": "9"}                            # extra: never written
    ghost_keys = record_keys(svc.schema, ghost)
    store.insert(table, {"PartitionKey": ghost_keys.partition_keys[0], "RowKey": ghost_keys.row_key,
                         STAMP: "20200101T000000000000Z-00aaaaaaaaaa-00000", TOMBSTONE: False,
                         **codec.chunk_properties(codec.dumps(ghost))})

    code, report = run("verify", "--json")
    assert code == 1
    assert (report["missing"], report["extra"], report["stale"]) == (1, 1, 2)
    by_kind = {(d["kind"], d["value"]): d for d in report["samples"]}
    assert by_kind[("missing", "c")]["row"] == "1"
    assert by_kind[("extra", "ghost")]["wal_stamp"] is None
    stale_changed = by_kind[("stale", "changed")]
    assert stale_changed["index_stamp"] == v1_entity[STAMP] and stale_changed["wal_stamp"] > v1_entity[STAMP]
    assert "delete" in by_kind[("stale", "c")]["reason"]
    assert svc.query_all({"sku": "ghost"}) == [ghost]  # what a reader sees before the repair
    assert svc.query_all({"category": "c"}) != [changed_v2]

    code, text = run("verify")  # the same in words, with the hint
    assert code == 1 and "DRIFT" in text and "--repair" in text and "missing 1   extra 1   stale 2" in text

    code, report = run("verify", "--repair", "--json")
    assert code == 0 and report["repaired"] == 4 and report["repair_skipped"] == []
    code, report = run("verify", "--json")
    assert code == 0 and report["drift"] == 0
    assert svc.query_all({"sku": "ghost"}) == []
    assert sorted(svc.query_all({"category": "c"}), key=lambda r: r["name"]) == [lost, changed_v2]
    assert svc.query_all({"sku": "changed"}) == [changed_v2]


def test_verify_since_checks_only_records_written_after_it(run, svc):
    old = {"sku": "old", "category": "c", "name": "1"}
    svc.submit([old], apply_now=True)
    since = datetime.now(UTC).isoformat()
    new = {"sku": "new", "category": "c", "name": "2"}
    svc.submit([new], apply_now=True)
    for record in (old, new):
        e = entity(svc, record, "sku")
        svc.wal.store.delete(svc.index.table, e["PartitionKey"], e["RowKey"])

    code, report = run("verify", "--since", since, "--json")
    assert code == 1 and report["identities"] == 1 and report["missing"] == 1
    assert report["samples"][0]["value"] == "new"
    assert any("only records with WAL entries after" in n for n in report["notes"])
    code, report = run("verify", "--json")
    assert report["missing"] == 2


def test_operations_still_pending_are_not_drift(run, svc):
    svc.submit([{"sku": f"s{i}", "category": "c", "name": str(i)} for i in range(3)])  # enqueued, not applied
    code, report = run("verify", "--json")
    assert code == 0 and report["drift"] == 0 and report["pending"] == 6
    assert any("pending" in n for n in report["notes"])
    code, _ = run("recover")
    code, report = run("verify", "--json")
    assert code == 0 and report["pending"] == 0 and report["index_entities"] == 6


def test_an_entity_in_a_partition_the_record_does_not_have_is_extra(run, svc):
    record = {"sku": "s", "category": "c", "name": "n"}
    svc.submit([record], apply_now=True)
    copy = dict(entity(svc, record, "sku"))
    copy["PartitionKey"] = partition_key("category", "elsewhere")  # a record under a value it does not have
    svc.wal.store.insert(svc.index.table, copy)
    # Readers never see it (a query checks every filter against the stored record), yet it is drift.
    assert svc.query_all({"category": "elsewhere"}) == []
    assert svc.index.store.get(svc.index.table, copy["PartitionKey"], copy["RowKey"]) is not None

    code, report = run("verify", "--json")
    assert code == 1 and report["extra"] == 1 and report["samples"][0]["value"] == "elsewhere"
    code, report = run("verify", "--repair", "--json")
    assert code == 0 and report["repaired"] == 1
    assert svc.query_all({"category": "elsewhere"}) == [] and svc.query_all({"category": "c"}) == [record]
    assert run("verify", "--json")[0] == 0
