"""WAL, apply, sweep, checkpoint, query and tombstones, on every store (memory and Azurite)."""
import json
from datetime import timedelta

import pytest

from catalog.adapters.memory import MemoryQueue
from catalog.errors import EntryError, TransientStorageError, ValidationError
from catalog.index import TOMBSTONE
from catalog.keys import partition_key, record_keys
from catalog.wal import HEADER, SERVER_TIMEOUT, SHARDS, PendingEntry, parse_operation_id, shard_partition
from tests.helpers import SCHEMA, FaultyStore, StepClock, make_service, wait_until


def rec(i, **extra):
    return {"sku": f"s{i}", "category": "cat", "name": f"n{i:03d}", **extra}


def all_wal(svc):
    return [e for s in range(SHARDS) for e in svc.wal.store.query(svc.wal.table, shard_partition(s))]


class Spy:
    """Counts calls (and keeps kwargs) on a store."""

    def __init__(self, inner):
        self.inner, self.calls, self.rows_read = inner, [], {}

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            result = attr(*args, **kwargs)
            if name == "query":
                result = list(result)
                self.rows_read[args[0]] = self.rows_read.get(args[0], 0) + len(result)
            return result
        return call


def test_wal_keys_are_unique_time_ordered_and_spread_over_shards(store):
    svc = make_service(store, queue=MemoryQueue("q"))
    ops = [svc.submit([rec(i)]).operation for i in range(40)]
    assert len(set(ops)) == 40 and ops == sorted(ops)
    shards = {parse_operation_id(op) for op in ops}
    assert len(shards) > 1, "every write landed in one WAL partition"
    entries = [e for e in all_wal(svc) if e["kind"] != HEADER]
    assert len(entries) == 40 and len({e["RowKey"] for e in entries}) == 40


def test_bulk_is_logged_as_transactions_with_a_bounded_server_timeout(store):
    spy = Spy(store)
    svc = make_service(spy, queue=MemoryQueue("q"))
    spy.calls.clear()
    accepted = svc.submit([rec(i) for i in range(250)])
    writes = [(name, args, kw) for name, args, kw in spy.calls if args and args[0] == svc.wal.table
              and name in ("insert", "insert_batch")]
    assert [name for name, _, _ in writes] == ["insert_batch"] * 3
    assert [len(args[1]) for _, args, _ in writes] == [100, 100, 51]  # 250 entries + the header, last
    assert all(kw.get("timeout") == SERVER_TIMEOUT for _, _, kw in writes)
    assert writes[-1][1][1][-1]["kind"] == HEADER
    header, entries = svc.wal.read_operation(accepted.operation)
    assert header["count"] == 250 and len(entries) == 250


def test_queue_message_applies_the_operation_and_marks_it(store):
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    accepted = svc.submit([rec(1), rec(2)])
    assert svc.operation(accepted.operation)["status"] == "pending"
    assert svc.query({"category": "cat"}).items == []
    svc.apply_message(queue.messages[0])
    assert svc.operation(accepted.operation)["status"] == "applied"
    assert [r["name"] for r in svc.query({"category": "cat"}).items] == ["n001", "n002"]


def test_query_is_one_partition_with_and_filters_range_limit_and_continuation(store):
    svc = make_service(store)
    svc.submit([rec(i, category="even" if i % 2 == 0 else "odd") for i in range(30)], apply_now=True)
    svc.submit([{"sku": "s4", "category": "other", "name": "n004"}], apply_now=True)  # same sku, other identity
    spy = Spy(svc.index.store)
    svc.index.store = spy
    page = svc.query({"sku": "s4", "category": "even"})
    # One round of the race: a page of each filtered partition, read together; sku=s4 (2 entities)
    # ends first and answers.
    assert sorted((name, kw["rk_gt"]) for name, _, kw in spy.calls) == [("query_page", None)] * 2
    assert sorted(args[1] for _, args, _ in spy.calls) == [partition_key("category", "even"),
                                                           partition_key("sku", "s4")]
    assert page.items == [rec(4, category="even")]
    names, token = [], None
    while True:
        page = svc.query({"category": "even"}, row_from="n004", row_to="n020", limit=3, continuation=token)
        names += [r["name"] for r in page.items]
        token = page.continuation
        if not token:
            break
    assert names == [f"n{i:03d}" for i in range(4, 21, 2)]
    with pytest.raises(ValidationError, match="continuation"):
        svc.query({"category": "odd"}, continuation=svc.query({"category": "even"}, limit=1).continuation)
    with pytest.raises(ValidationError, match="must be on an index key"):
        svc.query({"name": "n001"})
    with pytest.raises(ValidationError, match="at least one"):
        svc.query({})
    with pytest.raises(ValidationError, match="limit"):
        svc.query({"sku": "s1"}, limit=0)


def test_sweep_applies_what_the_queue_missed_and_respects_the_settle_window(store):
    clock = StepClock(step=timedelta(seconds=1))
    svc = make_service(store, queue=MemoryQueue("q"), clock=clock, settle=timedelta(seconds=30))
    first = svc.submit([rec(1)])
    clock.now += timedelta(seconds=60)
    second = svc.submit([rec(2)])
    result = svc.sweep(clock.now + timedelta(seconds=1))  # second is younger than the settle window
    assert result.entries == 1
    assert svc.operation(first.operation)["status"] == "applied"
    assert svc.operation(second.operation)["status"] == "pending"
    assert svc.sweep(clock.now + timedelta(seconds=31)).entries == 1
    assert svc.health(clock.now + timedelta(seconds=31))["pending"] == 0


def test_checkpoint_advances_per_shard_and_never_moves_back(store):
    svc = make_service(store)
    assert svc.wal.advance("checkpoint", 3, "20260101T000000000000Z") == "20260101T000000000000Z"
    assert svc.wal.advance("checkpoint", 3, "20250101T000000000000Z") == "20260101T000000000000Z"
    assert svc.wal.checkpoint(3) == "20260101T000000000000Z" and svc.wal.checkpoint(4) == ""


def test_sweep_cost_follows_the_entries_after_the_checkpoint(store):
    clock = StepClock()
    svc = make_service(store, clock=clock)
    svc.submit([rec(i) for i in range(50)], apply_now=True)
    svc.sweep(clock.now + timedelta(seconds=1))
    clock.now += timedelta(seconds=2)  # later writes carry later stamps than that sweep's cutoff
    svc.submit([rec(100)], apply_now=False)
    spy = Spy(svc.wal.store)
    svc.wal.store = spy
    svc.materializer.wal.store = spy
    svc.sweep(clock.now + timedelta(seconds=1))
    assert svc.query({"sku": "s100"}).items == [rec(100)]
    assert spy.rows_read[svc.wal.table] == 1  # the new one-entry operation, not the 50 before the checkpoint


def test_an_entry_that_cannot_be_applied_is_recorded_and_blocks_nothing(store):
    clock = StepClock()
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue, clock=clock)
    good1 = svc.submit([rec(1)])
    # A corrupt entry, as a bug or a hand edit could leave it, logged between two good ones.
    bad, shard = svc.wal.new_operation_id()
    entities = svc.wal.entry_entities(bad, [PendingEntry("put", b"{not json")])
    svc.wal.append([*entities, svc.wal.header_entity(bad, 1, "put")])
    good2 = svc.submit([rec(2)])
    with pytest.raises(EntryError):
        svc.apply_message(f'{{"op": "{bad}"}}')  # the queue path raises: the message will be retried
    result = svc.sweep(clock.now + timedelta(seconds=1))
    assert result.failed == 1 and result.entries == 2
    assert svc.operation(bad)["status"] == "failed" and "not JSON" in svc.operation(bad)["error"]
    assert svc.operation(good1.operation)["status"] == svc.operation(good2.operation)["status"] == "applied"
    assert svc.wal.checkpoint(shard) > bad
    health = svc.health(clock.now)
    assert health["failed_operations"] == 1 and health["latest_failures"][0]["operation"] == bad
    assert len(svc.query({"category": "cat"}).items) == 2


def test_transient_error_stops_the_shard_at_the_last_finished_operation(store):
    clock = StepClock()
    svc = make_service(store, clock=clock)
    first = svc.submit([rec(1)])
    second = svc.submit([rec(2)])
    shard2 = parse_operation_id(second.operation)
    # Make the index refuse the second operation's writes transiently.
    faulty = FaultyStore(svc.index.store, svc.index.table, fail_on={2, 3, 4, 5},
                         exc=TransientStorageError("503 server busy"))
    svc.index.store = faulty
    result = svc.sweep(clock.now + timedelta(seconds=1))
    stopped = result.stopped_shards
    assert stopped, "the injected 503 must stop a shard"
    assert svc.wal.checkpoint(stopped[0]) < (second.operation if shard2 in stopped else first.operation)
    svc.index.store = faulty.inner
    svc.sweep(clock.now + timedelta(seconds=1))
    assert {r["name"] for r in svc.query({"category": "cat"}).items} == {"n001", "n002"}
    assert svc.operation(second.operation)["status"] == "applied"


def test_tombstones_are_hidden_then_collected_after_retention(store):
    clock = StepClock()
    svc = make_service(store, clock=clock, retention=timedelta(days=1))
    svc.submit([rec(1)], apply_now=True)
    svc.delete({"sku": "s1"}, apply_now=True)
    keys = record_keys(SCHEMA, rec(1))
    pk = keys.partition_keys[0]
    tomb = store.get(svc.index.table, pk, keys.row_key)
    assert tomb[TOMBSTONE] is True and svc.query({"sku": "s1"}).items == []
    svc.sweep(clock.now + timedelta(hours=1))
    assert store.get(svc.index.table, pk, keys.row_key) is not None  # inside retention: kept
    svc.sweep(clock.now + timedelta(days=2))
    assert store.get(svc.index.table, pk, keys.row_key) is None
    assert store.get(svc.index.table, keys.partition_keys[1], keys.row_key) is None


def test_an_older_put_never_overwrites_a_newer_delete(store):
    clock = StepClock()
    svc = make_service(store, queue=MemoryQueue("q"), clock=clock)
    put = svc.submit([rec(1)])
    delete = svc.delete({"sku": "s1"}, apply_now=True)  # resolves against an empty index: 0 matched
    assert delete.count == 0
    svc.apply_message(f'{{"op": "{put.operation}"}}')
    gone = svc.delete({"sku": "s1"})
    svc.apply_message(f'{{"op": "{gone.operation}"}}')
    svc.apply_message(f'{{"op": "{put.operation}"}}')  # a late duplicate of the older put
    assert svc.query({"sku": "s1"}).items == []


def test_operation_ids_are_validated(store):
    svc = make_service(store)
    with pytest.raises(ValidationError):
        svc.operation("../../etc")
    from catalog.errors import NotFoundError
    with pytest.raises(NotFoundError):
        svc.operation("20260101T000000000000Z-01abcdefabcd")


def test_small_operations_travel_in_the_message_large_ones_by_reference(store):
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    small = svc.submit([rec(1)])
    large = svc.submit([rec(i, blob="x" * 1000) for i in range(2, 60)])
    small_msg, large_msg = (json.loads(m) for m in queue.messages)
    assert small_msg["op"] == small.operation and len(small_msg["e"]) == 1
    assert large_msg == {"op": large.operation}
    spy = Spy(svc.wal.store)
    svc.wal.store = spy
    svc.apply_message(queue.messages[0])
    assert spy.rows_read.get(svc.wal.table, 0) == 0  # applied from the message alone
    svc.apply_message(queue.messages[1])
    assert spy.rows_read[svc.wal.table] == 59  # header + 58 entries read from the WAL
    assert len(svc.query({"category": "cat"}, limit=None).items) == 59
    assert svc.operation(small.operation)["status"] == svc.operation(large.operation)["status"] == "applied"


def test_concurrent_single_writes_share_a_transaction_and_a_message(store):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    spy = Spy(svc.wal.store)
    svc.wal.store = spy
    gate = threading.Event()
    real_append = svc.wal.append

    def slow_first_append(entities, **kw):
        gate.wait(5)  # the first request's write is in flight while the others arrive
        return real_append(entities, **kw)
    svc.wal.append = slow_first_append
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(svc.submit, [rec(i)]) for i in range(12)]
        wait_until(lambda: len(svc._group._waiting) == 11, timeout=10, what="requests to queue up")
        gate.set()
        accepted = [f.result(10) for f in futures]
    assert len({a.operation for a in accepted}) == 12 and all(a.status == "pending" for a in accepted)
    wal_writes = [name for name, args, _ in spy.calls if name in ("insert", "insert_batch")]
    assert wal_writes == ["insert", "insert_batch"]  # the first alone, the eleven waiting as one group
    assert len(queue.messages) == 2 and len(json.loads(queue.messages[1])["ops"]) == 11
    for text in queue.messages:
        svc.apply_message(text)
    assert all(svc.operation(a.operation)["status"] == "applied" for a in accepted)
    assert len(svc.query({"category": "cat"}).items) == 12


def test_a_bad_operation_in_a_group_message_fails_alone(store):
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    good = svc._append_group([PendingEntry("put", json.dumps(rec(1)).encode()),
                           PendingEntry("put", b'{"sku": "no category"}'),
                           PendingEntry("put", json.dumps(rec(2)).encode())])
    message = queue.messages[0]
    with pytest.raises(EntryError, match="missing required fields"):
        svc.apply_message(message)  # retried by the queue: the good ones are applied already
    assert svc.operation(good[0].operation)["status"] == "applied"
    assert svc.operation(good[1].operation)["status"] == "pending"
    svc.apply_poison(message)
    assert [svc.operation(a.operation)["status"] for a in good] == ["applied", "failed", "applied"]
    assert {r["name"] for r in svc.query({"category": "cat"}).items} == {"n001", "n002"}


def raw_status(svc, op_id):
    return svc.wal.header(op_id)["status"]


def test_a_one_record_operation_reads_applied_from_the_index_while_its_mark_is_buffered(store):
    from catalog.batching import MarkBuffer

    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    svc.marks = MarkBuffer(svc.wal, idle=600, delay=600)  # keep the marks buffered
    ops = [svc.submit([rec(i)]).operation for i in range(3)]
    assert [svc.operation(op)["status"] for op in ops] == ["pending"] * 3  # logged, not applied
    for text in queue.messages:
        svc.apply_message(text)
    assert [raw_status(svc, op) for op in ops] == ["pending"] * 3  # no mark written on the apply path
    views = [svc.operation(op) for op in ops]
    assert [v["status"] for v in views] == ["applied"] * 3  # the index says so
    assert all(v["accepted"] <= v["finished"] for v in views)  # when the index entity was written
    assert svc.health()["pending"] == 3
    svc.flush()
    assert [raw_status(svc, op) for op in ops] == ["applied"] * 3 and svc.health()["pending"] == 0
    assert all(svc.operation(op).get("finished") for op in ops)


def test_a_superseded_one_record_operation_reads_applied(store):
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue)
    older = svc.submit([rec(1, v=1)]).operation
    newer = svc.submit([rec(1, v=2)]).operation
    svc.apply_message(queue.messages[1])  # only the newer one: the older can no longer change the index
    assert svc.operation(older)["status"] == "applied"
    assert svc.query({"sku": "s1"}).items == [rec(1, v=2)]
    assert svc.operation(newer)["status"] == "applied"


def test_sweep_marks_applied_operations_whose_marks_were_lost_with_two_reads_each(store):
    from catalog.batching import MarkBuffer

    clock = StepClock()
    queue = MemoryQueue("q")
    svc = make_service(store, queue=queue, clock=clock)
    svc.marks = MarkBuffer(svc.wal, idle=600, delay=600)
    ops = [svc.submit([rec(i)]).operation for i in range(4)]
    for text in queue.messages[:3]:  # the fourth message never arrives
        svc.apply_message(text)
    assert svc.marks.discard() == 3  # the process died with three marks buffered
    spy = Spy(store)
    svc.wal.store = svc.index.store = spy
    result = svc.sweep(clock.now + timedelta(seconds=1))
    writes = [(n, args[1]["PartitionKey"]) for n, args, _ in spy.calls if args and args[0] == svc.index.table
              and n in ("insert", "replace", "merge", "delete")]
    index_writes = [n for n, pk in writes if " " in pk]
    index_reads = [n for n, args, _ in spy.calls if args and args[0] == svc.index.table and n == "get"]
    assert index_writes == ["insert", "insert"]  # only the fourth operation, at its 2 index keys
    assert [n for n, pk in writes if " " not in pk] == ["insert"]  # and its version in the history
    # Per applied operation its last index entity and its history row; the fourth's first read found nothing.
    assert len(index_reads) == 3 * 2 + 1
    assert result.operations == 1 and result.entries == 1
    assert [raw_status(svc, op) for op in ops] == ["applied"] * 4
    assert svc.health(clock.now)["pending"] == 0


class ReadCounter:
    """Counts the entities a store's queries hand back: what a health check costs."""

    def __init__(self, inner):
        self.inner, self.read = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def query(self, *args, **kwargs):
        for e in self.inner.query(*args, **kwargs):
            self.read += 1
            yield e


def test_health_reads_a_bounded_number_of_entities_whatever_the_backlog(store):
    from catalog.service import HEALTH_PENDING_CAP

    counter = ReadCounter(store)
    svc = make_service(counter, queue=MemoryQueue("q"))
    svc.shard = 3
    idle = svc.health()
    assert idle["pending"] == 0 and idle["pending_at_least"] is False
    backlog = HEALTH_PENDING_CAP + 50
    svc.submit([rec(i) for i in range(backlog)])  # one bulk operation: one pending header...
    for i in range(backlog):
        svc.submit([rec(1000 + i)])  # ...and one-record operations, each pending, all in shard 3
    counter.read = 0
    view = svc.health()
    assert view["pending"] == HEALTH_PENDING_CAP and view["pending_at_least"] is True
    shard = next(s for s in view["shards"] if s["shard"] == shard_partition(3))
    assert shard["pending"] == HEALTH_PENDING_CAP and shard["pending_at_least"] is True
    assert view["oldest_pending_age_seconds"] is not None
    assert counter.read <= HEALTH_PENDING_CAP + SHARDS  # checkpoints and one page, never the backlog
