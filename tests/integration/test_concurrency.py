"""Writers, two appliers and a sweeper at once on Azurite: the index ends equal to the model (each
identity's operation with the highest stamp), and no checkpoint ever moves back."""
import queue
import random
import threading
from datetime import UTC, datetime, timedelta

from catalog import codec
from catalog.errors import TransientStorageError
from catalog.keys import record_keys
from catalog.wal import HEADER, PUT, SHARDS, shard_partition
from tests.helpers import SCHEMA, make_service, visible_index

SKUS, CATEGORIES, NAMES = ["a", "b", "c"], ["x", "y"], ["1", "2"]


class ThreadQueue:
    name = "in-test"

    def __init__(self):
        self.q = queue.Queue()

    def create(self):
        pass

    def send(self, text):
        self.q.put(text)

    def depth(self):
        return self.q.qsize()


def model_from_wal(svc):
    """Each identity's latest logged operation, by stamp: what the index must converge to."""
    latest = {}
    for shard in range(SHARDS):
        for e in svc.wal.store.query(svc.wal.table, shard_partition(shard)):
            if e["kind"] == HEADER:
                continue
            body = codec.decode_payload(e)
            keys = record_keys(SCHEMA, body)
            if keys.row_key not in latest or latest[keys.row_key][0] < e["RowKey"]:
                latest[keys.row_key] = (e["RowKey"], body if e["kind"] == PUT else None, keys)
    expected = {}
    for _, record, keys in latest.values():
        if record is not None:
            for pk, rk in keys.entities():
                expected[(pk, rk)] = record
    return expected


def test_concurrent_writers_appliers_and_sweeper_converge(azure_table_store):
    messages = ThreadQueue()
    svc = make_service(azure_table_store, queue=messages, settle=timedelta(seconds=2))
    stop = threading.Event()
    errors, checkpoints_seen = [], {s: [] for s in range(SHARDS)}

    def writer(seed):
        rnd = random.Random(seed)
        try:
            for i in range(15):
                if rnd.random() < 0.7:
                    svc.submit([{"sku": rnd.choice(SKUS), "category": rnd.choice(CATEGORIES),
                                 "name": rnd.choice(NAMES), "v": f"{seed}-{i}"}])
                else:
                    svc.delete({"sku": rnd.choice(SKUS)}, row_from=rnd.choice(NAMES))
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    def applier():
        while not stop.is_set() or not messages.q.empty():
            try:
                text = messages.q.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                svc.apply_message(text)
                if random.random() < 0.2:
                    messages.send(text)  # at-least-once: some messages come twice
            except TransientStorageError:
                messages.send(text)
            except Exception as e:
                errors.append(e)

    def sweeper():
        while not stop.is_set():
            svc.sweep(datetime.now(UTC))
            for s in range(SHARDS):
                checkpoints_seen[s].append(svc.wal.checkpoint(s))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    workers = [threading.Thread(target=applier) for _ in range(2)] + [threading.Thread(target=sweeper)]
    for t in threads + workers:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    for t in workers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads + workers)
    assert errors == []
    svc.sweep(datetime.now(UTC) + timedelta(seconds=5))

    for shard, seen in checkpoints_seen.items():
        assert seen == sorted(seen), f"checkpoint of shard {shard} moved back: {seen}"
    assert any(seen and seen[-1] for seen in checkpoints_seen.values())
    partitions = {record_keys(SCHEMA, {"sku": s, "category": c, "name": "n"}).partition_keys[i]
                  for s in SKUS for c in CATEGORIES for i in (0, 1)}
    expected = model_from_wal(svc)
    assert expected, "the run should leave some records"
    assert visible_index(azure_table_store, svc.index, partitions) == expected
    assert svc.health()["pending"] == 0
