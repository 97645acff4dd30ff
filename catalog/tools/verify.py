"""verify: replay the WAL into the state the index should be in, compare it with the index table, repair.

The expected state follows the apply rules (docs/architecture.md §5): for each record identity the WAL entry with
the highest stamp wins; a put gives the record at each of its index keys, a delete a tombstone (or
nothing: tombstones are collected after their retention). Then every index entity is read once and
classified:

- missing: the record's latest put has no entity at one of its index keys;
- stale:   an entity holds another version than the latest (older stamp, different payload, a live
           record where a delete won, a tombstone where a put won);
- extra:   no WAL entry explains the entity (or it sits in a partition the record does not have).

Not drift: entities of operations still pending (the queue or the sweep has yet to apply them) and
entities written after the scan started. Memory is O(identities checked): `since` narrows it.

Repair goes through the normal apply path: the winning entry is read again from the WAL and applied
with its stamp (`Materializer.apply_entry`). An entity that holds a stamp not older than the
winner's (so a normal write would skip it) and that no WAL entry explains is deleted first, with its
ETag. An extra entity is deleted (ETag-guarded): no WAL entry explains it, the WAL is the source of
truth, and the index must never show a record the WAL does not have; if its stamp turns out to name
a WAL entry written during the scan, it is left alone and reported.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import codec
from ..errors import ConflictError, EntryError, SchemaMismatchError, ValidationError
from ..index import STAMP, TOMBSTONE
from ..index_meta import IdentityRules, read_index_meta
from ..keys import SEP, RecordKeys, decode_part, record_keys
from ..service import CatalogService
from ..wal import PENDING, PUT, WalEntry, is_status_entity, parse_time, ts
from .progress import NO_PROGRESS, Progress

KINDS = ("missing", "extra", "stale")


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(slots=True)
class _Expected:
    stamp: str
    put: bool
    pks: tuple[str, ...]
    digest: bytes | None
    group: str | None  # source identity that wrote it (tables built by reindex from another schema)
    derived: bool  # a tombstone implied by a later entry on the same source identity
    pending: bool  # its operation has not been applied yet (or is still being written)
    seen: int = 0  # bit i: an entity was found at pks[i]


def _decoded(encoded: str) -> str | None:
    try:
        return decode_part(encoded)
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Drift:
    kind: str
    partition: str
    row_key: str
    index_stamp: str | None
    wal_stamp: str | None
    reason: str

    def view(self) -> dict[str, Any]:
        field_part, _, value_part = self.partition.partition(SEP)
        row_part = self.row_key.rsplit(SEP, 1)[0]
        return {"kind": self.kind, "field": _decoded(field_part), "value": _decoded(value_part),
                "row": _decoded(row_part), "partition_key": self.partition, "row_key": self.row_key,
                "index_stamp": self.index_stamp, "wal_stamp": self.wal_stamp, "reason": self.reason}


@dataclass
class VerifyReport:
    table: str
    since: str | None
    bound: str
    show: int
    entries: int = 0
    identities: int = 0
    index_entities: int = 0
    counts: Counter = field(default_factory=Counter)
    samples: list[Drift] = field(default_factory=list)
    pending: int = 0
    newer: int = 0
    unusable: int = 0
    unusable_samples: list[dict] = field(default_factory=list)
    repaired: int | None = None
    repair_skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return sum(self.counts[k] for k in KINDS)

    @property
    def clean_after_repair(self) -> bool:
        return self.repaired is not None and self.repaired == self.drift and not self.repair_skipped

    def add(self, drift: Drift) -> None:
        self.counts[drift.kind] += 1
        if self.counts[drift.kind] <= self.show:
            self.samples.append(drift)

    def view(self) -> dict[str, Any]:
        return {
            "table": self.table, "since": self.since, "wal_entries": self.entries,
            "identities": self.identities, "index_entities": self.index_entities,
            "missing": self.counts["missing"], "extra": self.counts["extra"], "stale": self.counts["stale"],
            "drift": self.drift, "pending": self.pending, "newer_than_scan": self.newer,
            "unusable_entries": self.unusable, "unusable_samples": self.unusable_samples,
            "samples": [d.view() for d in self.samples],
            "repaired": self.repaired, "repair_skipped": self.repair_skipped, "notes": self.notes,
        }


def _compare(exp: _Expected, entity, stamp: str) -> str | None:
    """Why an index entity is not what the winning entry wrote (None if it is)."""
    tombstone = bool(entity.get(TOMBSTONE))
    if exp.put:
        if tombstone:
            return f"a tombstone of {stamp} where the record of {exp.stamp} should be"
        if stamp != exp.stamp:
            return f"holds the version of {stamp}; the WAL's latest is {exp.stamp}"
        try:
            data = codec.join_chunks(entity)
        except EntryError:
            return "its payload is unreadable"
        if _digest(data) != exp.digest:
            return "its payload differs from the WAL entry with its stamp"
        return None
    if not tombstone:
        return f"a live record of {stamp} that the delete of {exp.stamp} removed"
    if stamp != exp.stamp:
        return f"a tombstone of {stamp}; the WAL's latest delete is {exp.stamp}"
    return None


def verify(service: CatalogService, *, since: str | datetime | None = None, show: int = 20, repair: bool = False,
           progress: Progress = NO_PROGRESS, now: datetime | None = None) -> VerifyReport:
    wal, index, schema = service.wal, service.index, service.schema
    meta = read_index_meta(index)
    if meta is not None and meta.schema != schema:
        raise SchemaMismatchError(schema, meta.schema)
    rules = IdentityRules.of(meta, schema)
    now = now or wal.clock()
    bound = ts(now) + "~"  # every stamp up to now sorts below this
    after = ts(parse_time(since)) if since is not None else ""
    report = VerifyReport(index.table, parse_time(since).isoformat() if since is not None else None, bound, show)

    # 1. The expected state, from the WAL in stamp order.
    expected: dict[str, _Expected] = {}
    groups: dict[str, set[str]] = defaultdict(set)
    header_op, header_pending = None, False
    progress.begin("verify: reading the WAL", None, "entries")
    for item in wal.items(after=after, before=bound):
        if not isinstance(item, WalEntry):
            header_op, header_pending = item["RowKey"], item.get("status") == PENDING
            continue
        if is_status_entity(item.entity):  # a one-entry operation: its entry is its header
            header_op, header_pending = item.op_id, item.entity.get("status") == PENDING
        report.entries += 1
        progress.advance()
        # The header is written last: an entry without one belongs to an append still in flight.
        pending = item.op_id != header_op or header_pending
        try:
            payload = item.record()
            group = rules.grouping(item.stamp)
            gk = record_keys(group, payload).row_key if group is not None else None
        except (EntryError, ValidationError) as e:
            _unusable(report, item.stamp, str(e))
            continue
        keys, key_error = None, None
        if item.kind == PUT or gk is None:
            try:
                keys = record_keys(schema, payload)
            except ValidationError as e:
                key_error = str(e)
        if gk is not None:
            # The entry replaced (or deleted) its source identity's record: what that identity
            # last wrote under other keys is gone.
            for trk in groups.get(gk, ()):
                cur = expected[trk]
                if (keys is None or trk != keys.row_key) and cur.put and cur.group == gk and cur.stamp < item.stamp:
                    expected[trk] = _Expected(item.stamp, False, cur.pks, None, gk, True, pending)
        if keys is None:
            if key_error:
                _unusable(report, item.stamp, key_error)
            continue
        known = expected.get(keys.row_key)
        if known is None or item.stamp > known.stamp:
            digest = _digest(codec.join_chunks(item.entity)) if item.kind == PUT else None
            expected[keys.row_key] = _Expected(item.stamp, item.kind == PUT, keys.partition_keys, digest, gk,
                                               False, pending)
        if gk is not None:
            groups[gk].add(keys.row_key)
    progress.end()
    report.identities = len(expected)

    # 2. The index as it is.
    per_identity: Counter = Counter()
    rewrite: dict[str, _Expected] = {}
    force: dict[str, list[tuple[str, str | None, str]]] = defaultdict(list)
    extras: list[tuple[str, str, str | None, str, bool]] = []
    progress.begin("verify: reading the index", None, "entities")
    for entity in index.entities():
        pk, rk = entity["PartitionKey"], entity["RowKey"]
        if SEP not in pk:
            continue  # not an index partition (reindex bookkeeping)
        report.index_entities += 1
        progress.advance()
        stamp = str(entity.get(STAMP, ""))
        exp = expected.get(rk)
        if stamp >= bound:
            report.newer += 1
            if exp is not None and pk in exp.pks:
                exp.seen |= 1 << exp.pks.index(pk)
            continue
        if exp is None:
            if since is None:
                report.add(Drift("extra", pk, rk, stamp or None, None, "no WAL entry explains it"))
                extras.append((pk, rk, entity.etag, stamp, True))
            continue
        if pk not in exp.pks:
            report.add(Drift("extra", pk, rk, stamp or None, exp.stamp,
                             "the record has no such index partition under the schema"))
            extras.append((pk, rk, entity.etag, stamp, False))
            continue
        exp.seen |= 1 << exp.pks.index(pk)
        problem = _compare(exp, entity, stamp)
        if problem is None:
            continue
        if exp.pending:
            report.pending += 1
            continue
        report.add(Drift("stale", pk, rk, stamp or None, exp.stamp, problem))
        per_identity[rk] += 1
        rewrite[rk] = exp
        if stamp >= exp.stamp:
            force[rk].append((pk, entity.etag, stamp))  # a normal write would skip it
    for rk, exp in expected.items():
        if not exp.put:
            continue
        for i, pk in enumerate(exp.pks):
            if exp.seen >> i & 1:
                continue
            if exp.pending:
                report.pending += 1
                continue
            report.add(Drift("missing", pk, rk, None, exp.stamp, "the record's latest put has no entity here"))
            per_identity[rk] += 1
            rewrite[rk] = exp
    progress.end()
    _notes(report, rules, meta, since)
    if repair:
        _repair(service, report, rewrite, force, extras, per_identity, progress)
    return report


def _unusable(report: VerifyReport, stamp: str, reason: str) -> None:
    report.unusable += 1
    if len(report.unusable_samples) < report.show:
        report.unusable_samples.append({"wal_stamp": stamp, "reason": reason})


def _notes(report: VerifyReport, rules: IdentityRules, meta, since) -> None:
    if since is not None:
        report.notes.append(f"only records with WAL entries after {report.since} were checked: index entities "
                            "of other records were not, so 'extra' entities cannot be found in this mode")
    if meta is not None and rules.source is not None and rules.source != rules.table:
        report.notes.append("this table was built by reindex: entries the source deployment accepted (before "
                            f"{meta.until or 'the end of the reindex'}) replace records by the source schema's "
                            "identity")
    if report.pending:
        report.notes.append(f"{report.pending} index entities wait for operations still pending (the queue "
                            "or the timer sweep applies them; `catalog recover` applies them now): not drift")
    if report.newer:
        report.notes.append(f"{report.newer} index entities were written after the scan started: not checked")
    if report.unusable:
        report.notes.append(f"{report.unusable} WAL entries cannot be applied under the schema (see `catalog "
                            "status` for failed operations): they are not part of the expected state")


def _repair(service: CatalogService, report: VerifyReport, rewrite: dict[str, _Expected],
            force: dict[str, list], extras: list, per_identity: Counter, progress: Progress) -> None:
    wal, index = service.wal, service.index
    repaired = 0
    progress.begin("verify: repairing", len(extras) + len(rewrite), "fixes")
    for pk, rk, etag, stamp, unknown_identity in extras:
        progress.advance()
        # An identity the scan never saw, whose stamp names a WAL entry after all, was written
        # while the WAL was being read: not extra.
        if unknown_identity and stamp and wal.read_entry(stamp) is not None:
            report.repair_skipped.append(f"{pk!r}/{rk!r}: its stamp {stamp} names a WAL entry written during "
                                         "the scan; run verify again")
            continue
        try:
            index.remove(pk, rk, etag)
            repaired += 1
        except ConflictError:
            report.repair_skipped.append(f"{pk!r}/{rk!r}: changed while repairing; run verify again")
    for rk, exp in rewrite.items():
        progress.advance()
        blocked = False
        for pk, etag, stamp in force.get(rk, ()):
            if stamp != exp.stamp and wal.read_entry(stamp) is not None:
                report.repair_skipped.append(f"{pk!r}/{rk!r}: holds {stamp}, a WAL entry newer than the scan; "
                                             "run verify again")
                blocked = True
                continue
            try:
                index.remove(pk, rk, etag)
            except ConflictError:
                report.repair_skipped.append(f"{pk!r}/{rk!r}: changed while repairing; run verify again")
                blocked = True
        if exp.derived:
            index.write(RecordKeys(rk, exp.pks, {}), exp.stamp, None)
        else:
            entry = wal.read_entry(exp.stamp)
            if entry is None:
                report.repair_skipped.append(f"{rk!r}: WAL entry {exp.stamp} cannot be read again")
                continue
            service.materializer.apply_entry(entry)
        if not blocked:
            repaired += per_identity[rk]
    progress.end()
    report.repaired = repaired
