"""The timer trigger: run a function on its NCRONTAB or TimeSpan schedule.

Like the host: one invocation at a time per function; after each run the next occurrence is
computed from the current time (missed occurrences are skipped, not queued); ``run_on_startup``
runs it once when the host starts. Times are UTC. ``use_monitor`` (schedule state kept in
blob storage across restarts) is not implemented: ``past_due`` is true only when an invocation
starts more than a second after its scheduled time within this process.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from devhost.schedule import CronSchedule, IntervalSchedule

log = logging.getLogger("devhost")

PAST_DUE_AFTER = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


class TimerRunner:
    """Fires one timer function. ``run_function(request) -> bool`` must not raise."""

    def __init__(self, function_name: str, schedule: CronSchedule | IntervalSchedule,
                 run_on_startup: bool, run_function: Callable[[TimerRequest], bool]):
        self.function_name = function_name
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._run_function = run_function
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"timer-{function_name}", daemon=True)
        self.last: datetime | None = None
        self.next: datetime | None = None
        self.invocations = 0

    def start(self) -> TimerRunner:
        self.next = self.schedule.next_after(utcnow())
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _fire(self, scheduled: datetime | None) -> None:
        now = utcnow()
        past_due = scheduled is not None and now - scheduled > PAST_DUE_AFTER
        upcoming = self.schedule.next_after(max(now, scheduled) if scheduled else now)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={"Last": _iso(self.last), "Next": _iso(upcoming), "LastUpdated": _iso(now)},
            schedule={"AdjustForDST": True})
        self.invocations += 1
        self._run_function(request)
        self.last = now

    def _loop(self) -> None:
        if self.run_on_startup and not self._stop.is_set():
            self._fire(None)
            self.next = self.schedule.next_after(utcnow())
        while not self._stop.is_set():
            assert self.next is not None
            wait = (self.next - utcnow()).total_seconds()
            if wait > 0:
                # Wake at most every few seconds so a changed wall clock is noticed.
                if self._stop.wait(min(wait, 5.0)):
                    return
                continue
            scheduled = self.next
            self._fire(scheduled)
            self.next = self.schedule.next_after(max(utcnow(), scheduled))
