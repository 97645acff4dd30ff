"""The status-mark buffer: batches per shard, written by a background writer, full batches at once."""
from catalog.adapters.memory import MemoryTableStore
from catalog.batching import MarkBuffer
from catalog.store import MAX_BATCH
from catalog.wal import APPLIED, PENDING, Wal, shard_partition
from tests.helpers import unique, wait_until


class CountingStore:
    def __init__(self):
        self.inner, self.batches, self.merges = MemoryTableStore(), [], 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def merge_batch(self, table, entities):
        self.batches.append(len(entities))
        return self.inner.merge_batch(table, entities)

    def merge(self, table, entity):
        self.merges += 1
        return self.inner.merge(table, entity)


def logged_ops(wal: Wal, shard: int, n: int) -> list[str]:
    """n one-entry operations in a shard, as the write path leaves them: status pending."""
    ops = []
    for _ in range(n):
        op_id, _ = wal.new_operation_id(shard)
        wal.store.insert(wal.table, {"PartitionKey": shard_partition(shard), "RowKey": f"{op_id}-00000",
                                     "kind": "put", "status": PENDING, "d0": b"{}"})
        ops.append(op_id)
    return ops


def statuses(wal: Wal, shard: int) -> list[str]:
    return [e["status"] for e in wal.store.query(wal.table, shard_partition(shard))]


def mark(wal: Wal, op_id: str) -> dict:
    return wal.mark_entity(op_id, f"{op_id}-00000", APPLIED)


def test_a_burst_of_marks_is_written_by_the_writer_as_one_transaction_per_shard():
    store = CountingStore()
    wal = Wal(store, unique("w"))
    wal.create()
    ops = {3: logged_ops(wal, 3, 30), 9: logged_ops(wal, 9, 12)}
    buffer = MarkBuffer(wal, idle=0.5, delay=2.0)
    for shard in (3, 9):
        for op in ops[shard]:
            buffer.add(mark(wal, op))
    # No flush(), no further add: the writer thread writes once the buffer is quiet.
    wait_until(lambda: statuses(wal, 3) == [APPLIED] * 30 and statuses(wal, 9) == [APPLIED] * 12,
               what="the writer thread to write the marks")
    assert sorted(store.batches) == [12, 30] and store.merges == 0


def test_a_full_shard_batch_is_written_by_the_thread_that_filled_it():
    store = CountingStore()
    wal = Wal(store, unique("w"))
    wal.create()
    ops = logged_ops(wal, 5, MAX_BATCH + 1)
    buffer = MarkBuffer(wal, idle=600, delay=600)  # the writer would wait ten minutes
    for op in ops:
        buffer.add(mark(wal, op))
    assert store.batches == [MAX_BATCH]  # written inside the 100th add
    assert statuses(wal, 5).count(APPLIED) == MAX_BATCH
    buffer.flush()
    assert statuses(wal, 5) == [APPLIED] * (MAX_BATCH + 1)
    assert store.batches == [MAX_BATCH] and store.merges == 1  # a lone mark: a merge, not a transaction


def test_marks_keep_flowing_while_adds_never_pause_for_the_idle_time():
    store = CountingStore()
    wal = Wal(store, unique("w"))
    wal.create()
    ops = logged_ops(wal, 1, 40)
    buffer = MarkBuffer(wal, idle=600, delay=0.2)  # never idle: the age limit must still write them
    for op in ops[:20]:
        buffer.add(mark(wal, op))
    wait_until(lambda: statuses(wal, 1).count(APPLIED) == 20, what="marks written by age")
    for op in ops[20:]:
        buffer.add(mark(wal, op))
    wait_until(lambda: statuses(wal, 1) == [APPLIED] * 40, what="the second burst written by age")


def test_a_storage_error_in_the_writer_does_not_stop_it():
    class FlakyStore(CountingStore):
        fail = True

        def merge(self, table, entity):  # a lone mark is written with a merge
            if self.fail:
                self.fail = False
                from catalog.errors import TransientStorageError
                raise TransientStorageError("throttled")
            return super().merge(table, entity)

    store = FlakyStore()
    wal = Wal(store, unique("w"))
    wal.create()
    first, second = logged_ops(wal, 2, 2)
    buffer = MarkBuffer(wal, idle=0.05, delay=1.0)
    buffer.add(mark(wal, first))
    wait_until(lambda: not store.fail, what="the failed write")
    buffer.add(mark(wal, second))
    wait_until(lambda: statuses(wal, 2) == [PENDING, APPLIED], what="the next mark written")


def test_history_rows_a_mark_carries_are_written_before_it_and_a_failure_keeps_the_mark_back():
    from catalog.errors import StorageError

    wal = Wal(MemoryTableStore(), unique("w"))
    wal.create()
    events: list[str] = []

    def versions(rows):
        events.append("history " + ",".join(r["RowKey"] for r in rows))
        if any(r["RowKey"] == "bad" for r in rows):
            raise StorageError("refused")

    buffer = MarkBuffer(wal, idle=600, delay=600, write_versions=versions)
    first, second, third = logged_ops(wal, 3, 3)
    buffer.add(mark(wal, first), [{"PartitionKey": "h0", "RowKey": "v1"}])
    buffer.add(mark(wal, second))
    buffer.flush()
    assert events == ["history v1"] and statuses(wal, 3) == [APPLIED, APPLIED, PENDING]
    buffer.add(mark(wal, third), [{"PartitionKey": "h0", "RowKey": "bad"}])
    buffer.flush()
    # Its history did not go in, so neither does its mark: the sweep applies that operation again.
    assert statuses(wal, 3) == [APPLIED, APPLIED, PENDING] and buffer.unwritten == 1


def test_flush_waits_for_what_the_writer_thread_is_writing():
    import threading

    wal = Wal(MemoryTableStore(), unique("w"))
    wal.create()
    entered, release = threading.Event(), threading.Event()

    def slow_versions(rows):
        entered.set()
        release.wait(10)

    buffer = MarkBuffer(wal, idle=0.01, delay=0.01, write_versions=slow_versions)
    [op] = logged_ops(wal, 5, 1)
    buffer.add(mark(wal, op), [{"PartitionKey": "h05", "RowKey": "v"}])
    assert entered.wait(10)  # the writer thread took the batch and is writing its history row
    flushing = threading.Thread(target=buffer.flush)
    flushing.start()
    flushing.join(0.3)
    assert flushing.is_alive()  # a reader who flushed must not look before that batch is written
    release.set()
    flushing.join(10)
    assert not flushing.is_alive() and statuses(wal, 5) == [APPLIED]
