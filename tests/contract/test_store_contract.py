"""One contract, every TableStore: if the in-memory store passes where Azurite fails, it is lying."""
from datetime import UTC

import pytest

from catalog.errors import ConflictError, StorageError
from tests.helpers import unique


@pytest.fixture
def table(store):
    name = unique("c")
    store.create_table(name)
    store.create_table(name)  # idempotent
    return name


def test_insert_get_and_conflict(store, table):
    etag = store.insert(table, {"PartitionKey": "p", "RowKey": "r", "v": 1, "b": b"\x00\xff", "t": True})
    got = store.get(table, "p", "r")
    assert got["v"] == 1 and got["b"] == b"\x00\xff" and got["t"] is True and got.etag == etag
    with pytest.raises(ConflictError):
        store.insert(table, {"PartitionKey": "p", "RowKey": "r", "v": 2})
    assert store.get(table, "p", "missing") is None


def test_replace_only_with_the_current_etag(store, table):
    etag = store.insert(table, {"PartitionKey": "p", "RowKey": "r", "v": 1})
    new = store.replace(table, {"PartitionKey": "p", "RowKey": "r", "v": 2}, etag)
    with pytest.raises(ConflictError):
        store.replace(table, {"PartitionKey": "p", "RowKey": "r", "v": 3}, etag)
    got = store.get(table, "p", "r")
    assert got["v"] == 2 and got.etag == new
    with pytest.raises(ConflictError):
        store.replace(table, {"PartitionKey": "p", "RowKey": "gone", "v": 3}, new)


def test_merge_upserts_and_keeps_other_properties(store, table):
    store.merge(table, {"PartitionKey": "p", "RowKey": "r", "a": 1})
    store.merge(table, {"PartitionKey": "p", "RowKey": "r", "b": "x"})
    got = store.get(table, "p", "r")
    assert (got["a"], got["b"]) == (1, "x")


def test_delete_with_and_without_etag(store, table):
    etag = store.insert(table, {"PartitionKey": "p", "RowKey": "r"})
    store.merge(table, {"PartitionKey": "p", "RowKey": "r", "v": 1})
    with pytest.raises(ConflictError):
        store.delete(table, "p", "r", etag=etag)
    store.delete(table, "p", "r", etag=store.get(table, "p", "r").etag)
    assert store.get(table, "p", "r") is None
    store.delete(table, "p", "r", etag=etag)  # gone already: not an error, with or without a precondition
    store.delete(table, "p", "r")
    assert store.get(table, "p", "r") is None


def test_query_orders_by_row_key_with_bounds_and_equalities(store, table):
    for rk in ["b", "a", "d", "c", "e"]:
        store.insert(table, {"PartitionKey": "p", "RowKey": rk, "odd": rk in "ace", "q": "it's"})
    store.insert(table, {"PartitionKey": "other", "RowKey": "a"})
    def rks(**kw):
        return [e["RowKey"] for e in store.query(table, "p", **kw)]
    assert rks() == ["a", "b", "c", "d", "e"]
    assert rks(rk_gt="b", rk_lt="e") == ["c", "d"]
    assert rks(rk_ge="b", rk_gt="c") == ["d", "e"]
    assert rks(equals={"odd": True}) == ["a", "c", "e"]
    assert rks(equals={"q": "it's", "odd": False}) == ["b", "d"]
    assert rks(page_size=2) == ["a", "b", "c", "d", "e"]
    assert [e["RowKey"] for e in store.query(table, "nobody")] == []


def test_query_values_are_parameters_not_syntax(store, table):
    store.insert(table, {"PartitionKey": "O'Brien", "RowKey": "x' or RowKey ne '"})
    store.insert(table, {"PartitionKey": "O'Brien", "RowKey": "y"})
    assert [e["RowKey"] for e in store.query(table, "O'Brien", rk_lt="x' or RowKey ne 'z")] == \
        ["x' or RowKey ne '"]


def test_batch_is_atomic_within_one_partition(store, table):
    store.insert_batch(table, [{"PartitionKey": "p", "RowKey": str(i)} for i in range(100)])
    assert len(list(store.query(table, "p"))) == 100
    with pytest.raises(StorageError):
        store.insert_batch(table, [{"PartitionKey": "q", "RowKey": "new"}, {"PartitionKey": "q", "RowKey": "new2"},
                                   {"PartitionKey": "q", "RowKey": "new"}])
    store.insert(table, {"PartitionKey": "q", "RowKey": "b"})
    with pytest.raises(ConflictError):
        store.insert_batch(table, [{"PartitionKey": "q", "RowKey": "a"}, {"PartitionKey": "q", "RowKey": "b"}])
    assert [e["RowKey"] for e in store.query(table, "q")] == ["b"]  # nothing of the failed batch


def test_batch_refuses_more_than_one_partition(store, table):
    with pytest.raises((StorageError, ValueError)):
        store.insert_batch(table, [{"PartitionKey": "a", "RowKey": "1"}, {"PartitionKey": "b", "RowKey": "1"}])


def test_large_binary_properties_round_trip(store, table):
    blob = bytes(range(256)) * 256  # 64 KiB
    store.insert(table, {"PartitionKey": "p", "RowKey": "r", "d0": blob, "d1": blob[:10]})
    got = store.get(table, "p", "r")
    assert got["d0"] == blob and got["d1"] == blob[:10]


def test_a_missing_table_is_reported_as_such(store):
    from catalog.errors import TableNotFoundError

    with pytest.raises(TableNotFoundError):
        list(store.query(unique("missing"), "p"))


def test_merge_batch_upserts_and_keeps_other_properties(store, table):
    store.insert(table, {"PartitionKey": "p", "RowKey": "a", "keep": 1})
    store.merge_batch(table, [{"PartitionKey": "p", "RowKey": rk, "status": "applied"} for rk in ("a", "b")])
    a, b = store.get(table, "p", "a"), store.get(table, "p", "b")
    assert (a["keep"], a["status"], b["status"]) == (1, "applied", "applied")
    with pytest.raises(StorageError):
        store.merge_batch(table, [{"PartitionKey": "p", "RowKey": "c"}, {"PartitionKey": "p", "RowKey": "c"}])


def test_entities_carry_the_time_the_service_last_wrote_them(store, table):
    from datetime import datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=5)  # Azurite's clock is this machine's
    etag = store.insert(table, {"PartitionKey": "p", "RowKey": "r", "v": 1})
    first = store.get(table, "p", "r").timestamp
    assert first is not None and first.tzinfo is not None and before <= first <= datetime.now(UTC)
    store.replace(table, {"PartitionKey": "p", "RowKey": "r", "v": 2}, etag)
    [queried] = list(store.query(table, "p"))
    assert queried.timestamp >= first and store.get(table, "p", "r").timestamp == queried.timestamp


def test_merge_batch_round_trips_awkward_keys_and_every_value_type(store, table):
    import math

    rows = [{"PartitionKey": "p'q %é", "RowKey": rk, "s": "naïve ☃ \"quoted\"", "i": -7, "big": 2 ** 40,
             "f": 1.5, "t": True} for rk in ("a'b", "c%20d", "e f", "ü")]
    rows.append({"PartitionKey": "p'q %é", "RowKey": "bin", "b": b"\x00\xff", "s": "x"})  # a batch of its own
    store.merge_batch(table, rows[:4])
    store.merge_batch(table, rows[4:])
    store.merge_batch(table, [{"PartitionKey": "p'q %é", "RowKey": "a'b", "f": math.pi}])  # merges, keeps
    for row in rows:
        got = store.get(table, row["PartitionKey"], row["RowKey"])
        expected = dict(row, f=math.pi) if row["RowKey"] == "a'b" else row
        assert {k: got[k] for k in expected} == expected


def test_merge_batch_into_a_missing_table_is_reported_as_such(store):
    from catalog.errors import TableNotFoundError

    with pytest.raises(TableNotFoundError):
        store.merge_batch(unique("missing"), [{"PartitionKey": "p", "RowKey": r, "v": 1} for r in "ab"])


def test_write_batch_creates_and_replaces_by_etag_all_or_nothing(store, table):
    old = store.insert(table, {"PartitionKey": "p", "RowKey": "a", "v": 0})
    etags = store.write_batch(table, [{"PartitionKey": "p", "RowKey": "b", "v": 1}],
                              [({"PartitionKey": "p", "RowKey": "a", "v": 1}, old)], timeout=10)
    assert [(e["RowKey"], e["v"]) for e in store.query(table, "p")] == [("a", 1), ("b", 1)]
    # The new ETags, creates first: each is the one a read now returns (a replace through it works).
    assert etags == [store.get(table, "p", "b").etag, store.get(table, "p", "a").etag] and old not in etags
    stale = old  # a's ETag moved with the replace: the whole batch is refused
    for creates, replaces in (([{"PartitionKey": "p", "RowKey": "c", "v": 2}],
                               [({"PartitionKey": "p", "RowKey": "a", "v": 2}, stale)]),
                              ([{"PartitionKey": "p", "RowKey": "c", "v": 2},
                                {"PartitionKey": "p", "RowKey": "b"}], []),
                              ([], [({"PartitionKey": "p", "RowKey": "gone", "v": 2}, stale)])):
        with pytest.raises(ConflictError):
            store.write_batch(table, creates, replaces)
    assert [(e["RowKey"], e["v"]) for e in store.query(table, "p")] == [("a", 1), ("b", 1)]
    assert store.write_batch(table, [], []) == []  # nothing to do is no error


def test_query_rk_le_and_select(store, table):
    for rk in "abcd":
        store.insert(table, {"PartitionKey": "p", "RowKey": rk, "s": rk.upper(), "big": b"x" * 10})
    got = list(store.query(table, "p", rk_ge="b", rk_le="c", select=("s",)))
    assert [(e["RowKey"], e["s"]) for e in got] == [("b", "B"), ("c", "C")]
    assert all("big" not in e and e.etag for e in got)


@pytest.mark.parametrize("sizes", [(1,), (2, 3), (1, 2, 4, 8), (1000,)])
def test_query_page_resumes_with_any_page_size(store, table, sizes):
    rows = [f"r{i:02d}" for i in range(12)]
    for rk in rows:
        store.insert(table, {"PartitionKey": "p", "RowKey": rk, "live": rk not in ("r03", "r04", "r05")})
    store.insert(table, {"PartitionKey": "q", "RowKey": "r00", "live": True})
    got, resume, pages = [], None, 0
    while True:
        size = sizes[min(pages, len(sizes) - 1)]
        page, resume = store.query_page(table, "p", page_size=size, resume=resume, rk_gt="r00", rk_lt="r11",
                                        equals={"live": True})
        assert len(page) <= size
        got += [e["RowKey"] for e in page]
        pages += 1
        if resume is None:
            break
    # Bounds and equalities hold on every page; nothing is lost or repeated at a page boundary.
    assert got == ["r01", "r02", "r06", "r07", "r08", "r09", "r10"]
    page, resume = store.query_page(table, "p", page_size=1000, rk_ge="r11")
    assert [e["RowKey"] for e in page] == ["r11"] and resume is None and page[0].etag
    assert store.query_page(table, "p", page_size=5, rk_gt="zz") == ([], None)
