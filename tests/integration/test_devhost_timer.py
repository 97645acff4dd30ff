"""The dev host's timer trigger: NCRONTAB and TimeSpan schedules, run_on_startup, TimerRequest."""
from __future__ import annotations

from datetime import datetime

import azure.functions as func
import pytest

from devhost import DevHost
from devhost.settings import HostConfigError
from tests.helpers import wait_until


def test_timer_fires_every_second(toy_host):
    host = toy_host(settings={"TOY_TIMER_SCHEDULE": "*/1 * * * * *"}, queues=False)
    toy = host.module
    ticks = wait_until(lambda: len(toy.events("tick")) >= 3 and toy.events("tick"), timeout=10, what="3 ticks")
    assert not any(t["past_due"] for t in ticks)
    nexts = [datetime.fromisoformat(t["next"]) for t in ticks[:3]]
    assert all(n.microsecond == 0 for n in nexts)  # occurrences fall on whole seconds
    assert nexts == sorted(set(nexts))  # one invocation per occurrence, in order


def test_timespan_schedule(toy_host):
    host = toy_host(settings={"TOY_TIMER_SCHEDULE": "00:00:01"}, queues=False)
    wait_until(lambda: len(host.module.events("tick")) >= 2, timeout=10, what="2 ticks")


def test_run_on_startup_and_timer_request(tmp_path):
    app = func.FunctionApp()
    seen: list[func.TimerRequest] = []

    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
    def yearly(timer: func.TimerRequest) -> None:
        seen.append(timer)

    with DevHost(app, app_dir=tmp_path, port=0) as host:
        wait_until(lambda: seen, timeout=10, what="the startup invocation")
        assert host.triggers["yearly"] == "0 0 0 1 1 *"
    (timer,) = seen
    assert isinstance(timer, func.TimerRequest) and timer.past_due is False
    assert timer.schedule_status["Next"].endswith("-01-01T00:00:00+00:00")
    assert timer.schedule == {"AdjustForDST": True}


def test_no_timers_flag(toy_host):
    host = toy_host(settings={"TOY_TIMER_SCHEDULE": "*/1 * * * * *"}, timers=False, queues=False)
    assert host.timers == []
    assert "not scheduled: --no-timers" in host.describe()


def test_invalid_schedule_stops_the_start(toy_host):
    with pytest.raises(HostConfigError, match="function tick: invalid schedule"):
        toy_host(settings={"TOY_TIMER_SCHEDULE": "every minute"})
