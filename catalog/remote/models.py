"""The values the HTTP client hands back: an accepted write (`Operation`) and one logged change of a
record (`Change`). Frozen, so a caller can keep and compare them; built from the API's JSON, and
tolerant of members a newer server adds."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PENDING, APPLIED, FAILED = "pending", "applied", "failed"


@dataclass(frozen=True)
class Operation:
    """An accepted write, as the API last described it.

    `id` is None for a delete that matched nothing (nothing was written, so there is nothing to
    wait for). `count` is the records an insert carried or a delete matched. `finished`, `error`,
    `last_error` and `failed_entries` come from `GET /operations/{id}` (a write's 202 answer has
    only the id, status and count)."""

    id: str | None
    status: str
    action: str
    count: int
    accepted: datetime | None = None
    finished: datetime | None = None
    error: str | None = None
    last_error: str | None = None
    failed_entries: int | None = None

    @property
    def done(self) -> bool:
        """No longer pending: applied or failed."""
        return self.status != PENDING

    @property
    def reason(self) -> str | None:
        """Why it failed (or, while pending, why the last attempt to apply it did not succeed)."""
        return self.error or self.last_error

    @classmethod
    def from_json(cls, body: Mapping[str, Any], action: str) -> Operation:
        """From a write's answer or an operation's status; `action` is what the route implies when
        the body does not say (`insert` for POST, `delete` for DELETE)."""
        action = body.get("action") or action
        count = body.get("matched") if "matched" in body else body.get("records")
        failed = body.get("failed")
        return cls(id=body.get("operation"), status=str(body.get("status", PENDING)), action=action,
                   count=int(count or 0), accepted=_time(body.get("accepted")), finished=_time(body.get("finished")),
                   error=body.get("error") or None, last_error=body.get("last_error") or None,
                   failed_entries=int(failed) if failed is not None else None)


@dataclass(frozen=True)
class Change:
    """One logged change of one record, in log order: `kind` is `put` (the record as written) or
    `delete` (the record as it was); `position` is where it sits in the change feed (pass it as
    `after` to resume); `operation` the write that made it; `time` when it was accepted."""

    position: str
    operation: str
    kind: str
    record: dict[str, Any] | None = field(hash=False)
    time: datetime | None

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Change:
        return cls(position=str(item["position"]), operation=str(item.get("operation")), kind=str(item["kind"]),
                   record=item.get("record"), time=_time(item.get("time")))


def _time(value: Any) -> datetime | None:
    """The API's ISO 8601 times (Python's isoformat, or with a trailing Z) as aware datetimes."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)
