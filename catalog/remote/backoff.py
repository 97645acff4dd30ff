"""When to try a request again: which failures are worth a retry, and how long to wait before it.

Exponential back-off with jitter, so clients that failed together do not come back together, and
never sooner than the server's `Retry-After` (it knows how long it needs)."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Busy or briefly unreachable: the same request may well succeed later. 500 (a bug or a
# misconfiguration) and 4xx will not, except 409 on a keyed write (see `retryable_status`).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
LONGEST_RETRY_AFTER = 300.0  # seconds; a larger Retry-After is taken as this


def retryable_status(status: int, *, keyed: bool) -> bool:
    """409 on a write with an Idempotency-Key means its first attempt is still being written: the
    retry gets that attempt's answer."""
    return status in RETRY_STATUSES or (status == 409 and keyed)


def retry_after_seconds(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), LONGEST_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now()).total_seconds(), 0.0), LONGEST_RETRY_AFTER)


@dataclass(frozen=True)
class Backoff:
    """Attempt n (0 for the first retry) waits between half and all of min(cap, base * 2**n) seconds
    ("equal jitter": spread out, yet always growing), or `Retry-After` if that is longer."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2 ** attempt)
        jittered = ceiling / 2 + rand() * ceiling / 2
        return max(jittered, retry_after) if retry_after is not None else jittered
