"""Convergence: whatever the delivery order, duplicates or crashes mid-fan-out, a sweep leaves exactly
the index obtained by applying each identity's operations in stamp order. Runs on memory and Azurite."""
import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog import codec
from catalog.adapters.memory import MemoryTableStore
from catalog.keys import record_keys
from catalog.wal import DELETE, PUT, PendingEntry
from tests.helpers import SCHEMA, Crash, FaultyStore, StepClock, make_service, visible_index

IDENTITIES = [
    {"sku": "a", "category": "x", "name": "1"},
    {"sku": "a", "category": "y", "name": "1"},  # shares the sku partition with the first
    {"sku": "B", "category": "x", "name": "2"},
]

operations = st.lists(st.tuples(st.sampled_from([PUT, PUT, DELETE]), st.integers(0, len(IDENTITIES) - 1)),
                      min_size=1, max_size=10)


@st.composite
def scenarios(draw):
    ops = draw(operations)
    # Each delivery: which operations one message names (several make one batched unit, so
    # entities of one partition share a transaction), and after how many index writes the
    # applier crashes (None: no crash). Any order, any repetition.
    deliveries = draw(st.lists(st.tuples(st.lists(st.integers(0, len(ops) - 1), min_size=1, max_size=3),
                                         st.none() | st.integers(1, 4)),
                               max_size=3 * len(ops)))
    return ops, deliveries


def log_operations(svc, ops):
    """Log each operation as its own WAL operation, in order: stamps increase with the list index."""
    op_ids = []
    for version, (kind, ident) in enumerate(ops):
        body = dict(IDENTITIES[ident], version=version) if kind == PUT else IDENTITIES[ident]
        op_id, _ = svc.wal.new_operation_id()
        entities = svc.wal.entry_entities(op_id, [PendingEntry(kind, codec.dumps(body))])
        svc.wal.append([*entities, svc.wal.header_entity(op_id, 1, kind)])
        op_ids.append(op_id)
    return op_ids


def deliver_then_sweep(svc, clock, op_ids, deliveries):
    """Each delivery is one message naming some operations (several: one batched unit), applied by
    an instance that crashes after the given number of index writes; then a sweep."""
    inner = svc.index.store
    for which, crash_after in deliveries:
        svc.index.store = FaultyStore(inner, svc.index.table, {crash_after} if crash_after else set())
        named = [{"op": op_ids[i]} for i in which]
        try:
            svc.apply_message(json.dumps(named[0] if len(named) == 1 else {"ops": named}))
        except Crash:
            pass  # the instance died mid-fan-out; the message would come back or the sweep picks it up
    svc.index.store = inner
    svc.sweep(clock.now + timedelta(seconds=1))


def expected_index(ops):
    last = {}
    for version, (kind, ident) in enumerate(ops):
        last[ident] = dict(IDENTITIES[ident], version=version) if kind == PUT else None
    expected = {}
    for record in filter(None, last.values()):
        keys = record_keys(SCHEMA, record)
        for pk, rk in keys.entities():
            expected[(pk, rk)] = record
    return expected


def all_partitions():
    return {pk for ident in IDENTITIES for pk in record_keys(SCHEMA, ident).partition_keys}


def check_convergence(store, ops, deliveries):
    clock = StepClock()
    svc = make_service(store, clock=clock)
    op_ids = log_operations(svc, ops)
    deliver_then_sweep(svc, clock, op_ids, deliveries)
    assert visible_index(store, svc.index, all_partitions()) == expected_index(ops)
    for record in expected_index(ops).values():
        assert record in svc.query({"sku": record["sku"], "category": record["category"]}).items
    assert svc.health(clock.now)["pending"] == 0


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_converges_in_memory(scenario):
    check_convergence(MemoryTableStore(), *scenario)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_converges_on_azurite(azure_table_store, scenario):
    check_convergence(azure_table_store, *scenario)


MANY = [{"sku": f"s{i}", "category": "shared", "name": f"n{i % 7}"} for i in range(24)]
bulk_operations = st.lists(st.lists(st.tuples(st.sampled_from([PUT, PUT, DELETE]), st.integers(0, len(MANY) - 1)),
                                    min_size=1, max_size=12), min_size=1, max_size=5)


@st.composite
def bulk_scenarios(draw):
    ops = draw(bulk_operations)
    deliveries = draw(st.lists(st.tuples(st.lists(st.integers(0, len(ops) - 1), min_size=1, max_size=3),
                                         st.none() | st.integers(1, 3)), max_size=8))
    return ops, deliveries


def check_bulk_convergence(store, ops, deliveries):
    """Bulk operations over records sharing one partition: their entities share transactions, crashes
    land between and inside those, deliveries repeat and reorder; the sweep still converges."""
    clock = StepClock()
    svc = make_service(store, clock=clock)
    op_ids, last, version = [], {}, 0
    for entries in ops:
        pending = []
        for kind, ident in entries:
            version += 1
            body = dict(MANY[ident], version=version) if kind == PUT else MANY[ident]
            pending.append(PendingEntry(kind, codec.dumps(body)))
            last[ident] = body if kind == PUT else None
        op_id, _ = svc.wal.new_operation_id()
        entities = svc.wal.entry_entities(op_id, pending)
        svc.wal.append([*entities, svc.wal.header_entity(op_id, len(pending), PUT)])
        op_ids.append(op_id)
    deliver_then_sweep(svc, clock, op_ids, deliveries)
    expected = {}
    for record in filter(None, last.values()):
        for pk, rk in record_keys(SCHEMA, record).entities():
            expected[(pk, rk)] = record
    partitions = {pk for ident in MANY for pk in record_keys(SCHEMA, ident).partition_keys}
    assert visible_index(store, svc.index, partitions) == expected


@settings(max_examples=150, deadline=None)
@given(bulk_scenarios())
def test_bulk_operations_converge_in_memory(scenario):
    check_bulk_convergence(MemoryTableStore(), *scenario)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bulk_scenarios())
def test_bulk_operations_converge_on_azurite(azure_table_store, scenario):
    check_bulk_convergence(azure_table_store, *scenario)
