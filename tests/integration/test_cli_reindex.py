"""`catalog reindex` on a real Azurite: a new schema answers queries on its new key; an interrupted
rebuild resumes without duplicates or loss; the target's schema is recorded; bad targets are refused."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from catalog import codec
from catalog.bootstrap import build_service
from catalog.errors import SchemaMismatchError
from catalog.index import STAMP, TOMBSTONE, Index
from catalog.index_meta import read_index_meta
from catalog.keys import SEP
from catalog.settings import Schema, Settings
from catalog.tools.cli import main
from catalog.tools.reindex import reindex
from catalog.tools.verify import verify
from catalog.wal import WalEntry
from tests.helpers import unique

NEW = Schema(("sku", "category", "brand"), "name")


@pytest.fixture
def run(env, tmp_path, capsys):
    def call(*args: str):
        code = main(list(args), env=env, cwd=tmp_path)
        out, err = capsys.readouterr()
        return code, (json.loads(out) if "--json" in args and out else out), err
    return call


@pytest.fixture
def svc(env):
    return build_service(Settings.from_env(env))


def now() -> str:
    return datetime.now(UTC).isoformat()


def snapshot(store, table: str) -> dict:
    """Every index entity: (PartitionKey, RowKey) -> (stamp, tombstone, record or None)."""
    return {(e["PartitionKey"], e["RowKey"]):
            (e[STAMP], e[TOMBSTONE], None if e[TOMBSTONE] else codec.decode_payload(e))
            for e in store.scan_table(table) if SEP in e["PartitionKey"]}


def by_name(records):
    return sorted(records, key=lambda r: r["name"])


def test_reindex_with_an_added_index_key_answers_queries_on_it(run, svc, env):
    moved = {"sku": "a", "category": "c", "name": "1", "brand": "acme"}
    moved_later = dict(moved, brand="zeta")  # same record under the current schema: it replaces the first
    gone = {"sku": "b", "category": "c", "name": "2", "brand": "acme"}
    kept = {"sku": "d", "category": "c", "name": "3", "brand": "acme"}
    svc.submit([moved, gone, kept], apply_now=True)
    svc.submit([moved_later], apply_now=True)
    svc.delete({"sku": "b"}, apply_now=True)
    target = unique("v")

    code, report, _ = run("reindex", "--to", target, "--index-keys", "sku,category,brand", "--until", now(), "--json")
    assert code == 0, report
    assert report["entries"] == 5 and report["state"] == "ready"
    # Written under the new keys and then removed by their source identity: the acme version of
    # record 1 (replaced) and record 2 (deleted; its delete names no brand).
    assert report["records_removed_by_source_identity"] == 2

    index = Index(svc.wal.store, target, NEW)
    assert index.query({"brand": "acme"}).items == [kept]
    assert index.query({"brand": "zeta"}).items == [moved_later]
    assert index.query({"brand": "ZETA", "sku": "a"}).items == [moved_later]  # case-insensitive, as configured
    assert by_name(index.iter_all({"category": "c"})) == [moved_later, kept]  # the records the live table has
    assert by_name(index.iter_all({"category": "c"})) == by_name(svc.query_all({"category": "c"}))

    meta = read_index_meta(svc.index.sibling(target, svc.schema))
    assert meta.schema == NEW and meta.source == svc.schema and meta.state == "ready"
    assert meta.wal_table == svc.wal.table

    # Verify agrees with the rebuilt table under its own schema (the replace rule included).
    new_settings = Settings.from_env(dict(env, CATALOG_TABLE=target, CATALOG_WAL_TABLE=svc.wal.table,
                                          CATALOG_INDEX_KEYS="sku,category,brand"))
    rebuilt = build_service(new_settings, ensure=False)
    assert verify(rebuilt).drift == 0

    # Later writes to the live deployment: running it again catches up.
    late = {"sku": "e", "category": "c", "name": "4", "brand": "zeta"}
    svc.submit([late], apply_now=True)
    svc.submit([dict(kept, brand="zeta")], apply_now=True)
    code, report, _ = run("reindex", "--to", target, "--until", now(), "--json")
    assert code == 0 and report["entries"] == 2 and report["resumed_after"]
    assert index.query({"brand": "acme"}).items == []
    assert by_name(index.query({"brand": "zeta"}).items) == [moved_later, dict(kept, brand="zeta"), late]
    assert verify(rebuilt).drift == 0


class Crash(Exception):
    pass


def test_interrupted_reindex_resumes_without_duplicates_or_loss(svc):
    records = [{"sku": f"s{i}", "category": f"c{i % 3}", "name": f"n{i:02d}", "brand": f"b{i % 4}"}
               for i in range(20)]
    svc.submit(records[:10], apply_now=True)
    svc.submit(records[10:], apply_now=True)
    for i in range(0, 20, 4):  # 5 records change brand: a new identity under the new schema
        svc.submit([dict(records[i], brand="moved")], apply_now=True)
    svc.delete({"sku": "s1"}, apply_now=True)
    svc.delete({"sku": "s4"}, apply_now=True)  # moved, then deleted
    entries = 20 + 5 + 2
    until = now()
    target, clean = unique("v"), unique("v")

    def crash_after(n):
        def hook(count):
            if count == n:
                raise Crash(f"killed after {n} entries")
        return hook

    with pytest.raises(Crash):
        reindex(svc, target, schema=NEW, until=until, save_every=5, on_entry=crash_after(13))
    progress = svc.wal.store.get(target, "meta", "reindex")
    stamps = [item.stamp for item in svc.wal.items() if isinstance(item, WalEntry)]
    assert len(stamps) == entries
    assert progress["after"] == stamps[9]  # saved every 5 entries: the crash lost entries 11-13's mark
    assert read_index_meta(svc.index.sibling(target, svc.schema)).state == "building"

    resumed = reindex(svc, target, schema=NEW, until=until, save_every=5)
    assert resumed.resumed_after == progress["after"]
    assert resumed.entries == entries - 10  # continued from the mark, not from the start
    assert resumed.state == "ready"

    reindex(svc, clean, schema=NEW, until=until)
    assert snapshot(svc.wal.store, target) == snapshot(svc.wal.store, clean)

    index = Index(svc.wal.store, target, NEW)
    expected = {r["name"]: r for r in records}
    for i in range(0, 20, 4):
        expected[records[i]["name"]] = dict(records[i], brand="moved")
    del expected["n01"], expected["n04"]
    visible = [r for c in ("c0", "c1", "c2") for r in index.iter_all({"category": c})]
    assert by_name(visible) == by_name(expected.values())  # each record once, none lost
    assert by_name(index.iter_all({"brand": "moved"})) == by_name(
        r for r in expected.values() if r["brand"] == "moved")


def test_reindex_under_the_same_schema_copies_the_live_table(run, svc):
    svc.submit([{"sku": f"s{i}", "category": "c", "name": str(i)} for i in range(6)], apply_now=True)
    svc.delete({"sku": "s2"}, apply_now=True)
    target = unique("copy")
    code, out, _ = run("reindex", "--to", target, "--until", now())
    assert code == 0 and "7 WAL entries applied" in out
    assert snapshot(svc.wal.store, target) == snapshot(svc.wal.store, svc.index.table)


def test_reindex_refuses_tables_it_must_not_touch(run, svc, env):
    svc.submit([{"sku": "s", "category": "c", "name": "n"}], apply_now=True)
    code, _, err = run("reindex", "--to", env["CATALOG_TABLE"])
    assert code == 2 and "serves" in err
    code, _, err = run("reindex", "--to", svc.wal.table)
    assert code == 2 and "WAL table" in err
    foreign = unique("f")
    svc.wal.store.create_table(foreign)
    svc.wal.store.insert(foreign, {"PartitionKey": "p", "RowKey": "r"})
    code, _, err = run("reindex", "--to", foreign)
    assert code == 2 and "not built by reindex" in err
    target = unique("v")
    assert run("reindex", "--to", target, "--index-keys", "sku,category,brand")[0] == 0
    code, _, err = run("reindex", "--to", target, "--index-keys", "sku")
    assert code == 2 and "is being built with" in err
    code, _, err = run("reindex", "--to", "bad-name")
    assert code == 2 and "--to" in err


def test_a_deployment_switches_to_a_reindexed_table_with_a_new_schema(run, svc, env):
    svc.submit([{"sku": "a", "category": "c", "name": "1", "brand": "acme"}], apply_now=True)
    target = unique("v")
    switched = dict(env, CATALOG_TABLE=target, CATALOG_WAL_TABLE=svc.wal.table,
                    CATALOG_INDEX_KEYS="sku,category,brand")
    from catalog.errors import IndexNotBuiltError
    with pytest.raises(IndexNotBuiltError, match="reindex"):
        build_service(Settings.from_env(switched))  # not built yet: refused, nothing locked
    assert set(svc.wal.schema_locks()) == {env["CATALOG_TABLE"].lower()}
    assert run("reindex", "--to", target, "--index-keys", "sku,category,brand", "--until", now())[0] == 0
    new = build_service(Settings.from_env(switched))  # the switch is accepted once the table is ready
    assert new.query({"brand": "ACME"}).items == [{"sku": "a", "category": "c", "name": "1", "brand": "acme"}]
    assert set(svc.wal.schema_locks()) == {env["CATALOG_TABLE"].lower(), target.lower()}
    with pytest.raises(SchemaMismatchError):
        build_service(Settings.from_env(dict(switched, CATALOG_INDEX_KEYS="sku,category")))
