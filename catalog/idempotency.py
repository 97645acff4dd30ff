"""Idempotency keys: a write sent again with the same key gets the first answer and writes nothing.

A caller that lost an answer (a timeout, a dropped connection) cannot know whether its write was
accepted; sent again without a key it becomes a second operation. With an `Idempotency-Key`, the
first request *claims* the key before it writes, and a repeat within KEY_TTL finds the claim:

- same request (its fingerprint: method, path, query and body), claim done: the first answer again
  (the same operation id), nothing written;
- another request under the same key: IdempotencyKeyReusedError (422);
- the first still being written: the repeat waits for it (IN_FLIGHT_WAIT), then RequestInFlightError
  (409, retry), unless the claim is older than the WAL write deadline: then the first writer is
  gone and the repeat takes the claim over (ETag-guarded) and writes the operation itself.

Exactly one operation is accepted per key: the claim is finished (`state` done) by a replace
conditioned on its ETag inside the same entity-group transaction as the operation's last WAL batch
(its header, or its single entity). A take-over changes that ETag, so the slow first writer's last
batch fails whole and its operation is never accepted; a finished claim is never taken over.

Where: the WAL table, in the partition of the WAL shard the key hashes to (the operation is written
in that shard, so its last batch and the claim share a partition):
- `idem-<key hash>`: the claim: request fingerprint, operation id, answer, state, created;
- `idex-<hour>-<key hash>-<time>`: its expiry row, written with the claim, so collection reads only what
  has expired. Both sort after every WAL stamp (stamps start with a digit), outside every scan.
"""
from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import CatalogError, ConflictError, IdempotencyKeyReusedError, RequestInFlightError, ValidationError
from .store import Entity, TableStore
from .wal import SHARDS, WRITE_DEADLINE, Wal, shard_partition

KEY_TTL = timedelta(hours=24)
IN_FLIGHT_WAIT = 10.0  # seconds a repeat waits for the first request to finish writing
STALE_AFTER = WRITE_DEADLINE  # a claim still writing after this: its writer is gone
CLAIM, EXPIRY = "idem-", "idex-"
WRITING, DONE = "writing", "done"
_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,253}[\x21-\x7e]|[\x21-\x7e]")


def check_key(key: str) -> str:
    """1-255 printable ASCII characters, not starting or ending with a space."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValidationError("Idempotency-Key must be 1 to 255 printable ASCII characters",
                              field="Idempotency-Key")
    return key


def fingerprint(method: str, path: str, params: dict[str, str], body: bytes) -> str:
    """What makes two requests the same request: method, path, query (without the function key
    `code`, which may differ between retries) and body bytes."""
    digest = hashlib.sha256()
    for part in (method.upper(), path.rstrip("/").lower(),
                 "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "code")):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\n")
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True)
class KeyedRequest:
    key: str
    fingerprint: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.key.encode("ascii")).hexdigest()[:32]

    @property
    def shard(self) -> int:
        return int(self.hash[:8], 16) % SHARDS

    @property
    def claim_key(self) -> tuple[str, str]:
        """(PartitionKey, RowKey) of this key's claim."""
        return shard_partition(self.shard), CLAIM + self.hash


@dataclass(frozen=True)
class Answer:
    """What the first request answered: its operation (None: a delete that matched nothing), the
    status it reported and its count (records, or matched)."""

    operation: str | None
    status: str
    count: int


@dataclass(frozen=True)
class Claim:
    """A key this request now holds (ETag of the claim), and the entity that finishes it."""

    request: KeyedRequest
    etag: str
    finish: dict


class IdempotencyKeys:
    def __init__(self, wal: Wal, *, clock: Callable[[], datetime] | None = None,
                 in_flight_wait: float = IN_FLIGHT_WAIT):
        self.wal = wal
        self.clock = clock or wal.clock
        self.in_flight_wait = in_flight_wait

    @property
    def store(self) -> TableStore:
        return self.wal.store  # the claims live in the WAL table, through the WAL's store

    @property
    def table(self) -> str:
        return self.wal.table

    def answer_or_claim(self, request: KeyedRequest, answer: Callable[[], Answer]) -> Answer | Claim:
        """The first answer under this key, if there is one (or RequestInFlightError,
        IdempotencyKeyReusedError); else a Claim on the key for `answer()` (called once the key is
        free: it names the new operation), which the caller finishes with its last WAL batch."""
        waited_until = time.monotonic() + self.in_flight_wait
        pause = 0.05
        while True:
            held = self.store.get(self.table, *request.claim_key)
            now = self.clock()
            if held is not None and not self._expired(held, now):
                if held.get("request") != request.fingerprint:
                    raise IdempotencyKeyReusedError(
                        "this Idempotency-Key was used for another request in the last 24 hours; use a new key "
                        "for a new request", field="Idempotency-Key")
                if held.get("state") == DONE:
                    return _answer_of(held)
                if now - _created(held) < STALE_AFTER:
                    if time.monotonic() >= waited_until:
                        raise RequestInFlightError("a request with this Idempotency-Key is still being written; "
                                                   "send it again in a moment")
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    continue
            mine = answer()
            try:
                return self._claim(request, mine, now, replacing=held)
            except ConflictError:
                continue  # another request claimed it (or took it over) first: look again

    def _claim(self, request: KeyedRequest, answer: Answer, now: datetime, replacing: Entity | None) -> Claim:
        pk, rk = request.claim_key
        claim = {"PartitionKey": pk, "RowKey": rk, "request": request.fingerprint,
                 "operation": answer.operation or "", "answered": answer.status, "count": answer.count,
                 "created": now.isoformat(), "state": WRITING}
        # One expiry row per claim written (a take-over writes its own), named by the hour it was
        # written in, then the key, then the rest of the time.
        expiry = {"PartitionKey": pk, "RowKey": f"{EXPIRY}{now:%Y%m%d%H}-{request.hash}-{now:%M%S%f}"}
        if answer.operation is None:
            claim["state"] = DONE  # nothing to write: the claim is the whole of it
        if replacing is None:
            etag = self.store.write_batch(self.table, [claim, expiry], [])[0]
        else:
            if replacing.etag is None:
                raise CatalogError("an idempotency claim read without an ETag")
            etag = self.store.write_batch(self.table, [expiry], [(claim, replacing.etag)])[1]
        return Claim(request, etag, {**claim, "state": DONE})

    def release(self, claim: Claim) -> None:
        """Give up a claim whose write failed (best effort, and only if it is still this one), so a
        retry can write at once instead of waiting for the claim to go stale."""
        try:
            self.store.delete(self.table, *claim.request.claim_key, etag=claim.etag)
        except CatalogError:
            pass  # finished after all, taken over, or storage is down: a retry reads what is there

    def collect(self, now: datetime | None = None, *, limit: int = 1000) -> int:
        """Delete claims older than KEY_TTL, by their expiry rows (an hour's grace on top). Returns
        how many claims were deleted."""
        now = now or self.clock()
        cutoff = f"{EXPIRY}{now - KEY_TTL - timedelta(hours=1):%Y%m%d%H}"
        collected = 0
        for shard in range(SHARDS):
            pk = shard_partition(shard)
            for row in list(self.store.query(self.table, pk, rk_ge=EXPIRY, rk_lt=cutoff, page_size=limit)):
                key_hash = row["RowKey"].split("-")[2]
                held = self.store.get(self.table, pk, CLAIM + key_hash)
                # A claim taken over since has a newer expiry row of its own: keep it until then.
                if held is not None and self._expired(held, now):
                    try:
                        self.store.delete(self.table, pk, held["RowKey"], etag=held.etag)
                        collected += 1
                    except ConflictError:
                        pass
                self.store.delete(self.table, pk, row["RowKey"])
        return collected

    @staticmethod
    def _expired(held: Entity, now: datetime) -> bool:
        return now - _created(held) >= KEY_TTL


def _created(held: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(held.get("created")))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)  # unreadable: as good as expired


def _answer_of(held: Any) -> Answer:
    return Answer(held.get("operation") or None, str(held.get("answered")), int(held.get("count", 0)))
