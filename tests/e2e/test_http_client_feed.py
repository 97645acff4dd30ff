"""CatalogHttpClient.changes() and .history() against the dev host: PENDING the `GET /changes` and
`GET /records/history` routes. Rename this file to test_http_client_feed.py when they land (the name
keeps pytest from collecting it until then). The client side is already covered without a server in
tests/unit/test_http_client.py (paging with `next`, the stop at an empty page, follow's long-poll,
the identity-only history query).

The app runs with CATALOG_SETTLE_SECONDS=1 so the feed serves an entry a second after it is written
instead of the production 50 s."""
from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest

from catalog import CatalogHttpClient, Change
from tests.e2e.conftest import ServedApp
from tests.helpers import wait_until


@pytest.fixture
def feed_app(storage_connection, tmp_path):
    app = ServedApp(storage_connection, tmp_path / "host.log", CATALOG_SETTLE_SECONDS="1")
    yield app
    app.stop()


def record(i: int, **extra) -> dict:
    return {"sku": f"F-{i:04d}", "category": "feed", "name": f"n{i:04d}", **extra}


def applied(client: CatalogHttpClient, *ops) -> None:
    for op in ops:
        assert client.wait(op, timeout=60).status == "applied"


def test_changes_lists_every_write_in_log_order_and_resumes_after_a_position(feed_app):
    with CatalogHttpClient(feed_app.base) as client:
        singles = [client.insert(record(i)) for i in range(3)]
        bulk = client.insert_many(record(i) for i in range(3, 253))
        applied(client, *singles, *bulk)
        gone = client.delete({"sku": "F-0000"})
        applied(client, gone)

        everything: list[Change] = wait_until(lambda: (c := list(client.changes(limit=100))) and len(c) == 254 and c,
                                              timeout=30, what="the feed to serve all 254 changes")
        assert [c.kind for c in everything] == ["put"] * 253 + ["delete"]
        assert [c.record for c in everything[:253]] == [record(i) for i in range(253)]
        assert everything[-1].record == record(0)  # a delete carries the record as it was
        assert [c.operation for c in everything[:3]] == [op.id for op in singles]
        assert {c.operation for c in everything[3:253]} == {bulk[0].id} and everything[-1].operation == gone.id
        assert len({c.position for c in everything}) == 254
        assert all(a.time <= b.time for a, b in itertools.pairwise(everything))

        rest = list(client.changes(after=everything[99].position))
        assert rest == everything[100:]
        later = list(client.changes(since=everything[-1].time))
        assert later[-1] == everything[-1] and everything[0] not in later


@pytest.mark.timeout(90)
def test_changes_follow_waits_for_new_writes(feed_app):
    with CatalogHttpClient(feed_app.base) as client:
        applied(client, client.insert(record(1)))
        first = wait_until(lambda: list(client.changes()), timeout=30, what="the first change")
        feed = client.changes(after=first[-1].position, follow=True)
        got: list[Change] = []
        reader = threading.Thread(target=lambda: got.extend(itertools.islice(feed, 2)), daemon=True)
        reader.start()  # long-polls an empty feed until the writes below settle
        applied(client, client.insert(record(2)), client.insert(record(3)))
        reader.join(timeout=60)
        assert not reader.is_alive(), "follow did not yield the new changes"
        assert [c.record for c in got] == [record(2), record(3)]


def test_history_of_one_record_and_as_of(feed_app):
    with CatalogHttpClient(feed_app.base) as client:
        applied(client, client.insert(record(7, price=1)))
        applied(client, client.insert(record(7, price=2)))  # same identity: replaced
        applied(client, client.insert(record(8)))  # another record: not in the history
        applied(client, client.delete({"sku": "F-0007"}))

        history = wait_until(lambda: (h := client.history(record(7, price=2))) and len(h) == 3 and h,
                             timeout=30, what="the record's three changes")
        assert [(c.kind, c.record) for c in history] == [("put", record(7, price=1)), ("put", record(7, price=2)),
                                                        ("delete", record(7, price=2))]
        before_second = history[1].time - timedelta(microseconds=1)
        assert client.history({"sku": "F-0007", "category": "feed", "name": "n0007"},
                              as_of=before_second) == history[:1]
