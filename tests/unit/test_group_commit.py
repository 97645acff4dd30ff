"""Group commit: concurrent one-record writes share a write; every caller gets its own result or the error."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from catalog.batching import GroupCommit


def test_concurrent_submits_are_grouped_and_each_gets_its_own_result():
    groups, started = [], threading.Event()
    gate = threading.Event()

    def write(items):
        groups.append(list(items))
        started.set()
        gate.wait(5)  # hold the first group so the others queue up behind it
        return [i * 10 for i in items]

    commit = GroupCommit(write, max_items=8)
    with ThreadPoolExecutor(20) as pool:
        first = pool.submit(commit.submit, 0)
        assert started.wait(5)
        rest = [pool.submit(commit.submit, i) for i in range(1, 20)]
        while len(commit._waiting) < 19:  # all queued behind the first write
            threading.Event().wait(0.001)
        gate.set()
        results = [first.result(5)] + [f.result(5) for f in rest]
    assert results == [i * 10 for i in range(20)]
    assert [len(g) for g in groups] == [1, 8, 8, 3]
    assert sorted(i for g in groups for i in g) == list(range(20))


def test_a_failed_write_fails_every_request_of_its_group_only():
    calls = []

    def write(items):
        calls.append(items)
        if 13 in items:
            raise RuntimeError("storage down")
        return items

    commit = GroupCommit(write)
    assert commit.submit(1) == 1
    with pytest.raises(RuntimeError, match="storage down"):
        commit.submit(13)
    assert commit.submit(2) == 2 and commit._busy is False
