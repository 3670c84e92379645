"""A worker node's task events: buffered ones go out together, once, a moment later (workers.consumer)."""

from __future__ import annotations

import time

from kombu.asynchronous import Hub

from accelerate_core.config import Settings
from workers.app import celery_config
from workers.consumer import _STALE_S, EVENT_FLUSH_S, EventFlush


def _fire_until(hub: Hub, done: object, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        hub.fire_timers(min_delay=0.0, max_delay=0.01)
        time.sleep(0.005)


def test_events_buffered_within_the_delay_are_flushed_once_after_it() -> None:
    # Given a flush on a real kombu hub's timer
    hub = Hub()
    flushed: list[float] = []
    flush = EventFlush(hub.call_later, lambda: flushed.append(time.monotonic()))
    # When five events are buffered at once
    start = time.monotonic()
    for _ in range(5):
        flush.request()
    hub.fire_timers(min_delay=0.0, max_delay=0.0)
    # Then nothing is published before the delay, and one flush takes them all after it
    assert flushed == []
    _fire_until(hub, lambda: flushed)
    time.sleep(EVENT_FLUSH_S)
    hub.fire_timers(min_delay=0.0, max_delay=0.0)
    assert len(flushed) == 1 and flushed[0] - start >= EVENT_FLUSH_S * 0.9
    # and the next event schedules a flush of its own
    flush.request()
    _fire_until(hub, lambda: len(flushed) == 2)
    assert len(flushed) == 2


def test_a_flush_whose_timer_never_fired_is_scheduled_again() -> None:
    # Given a flush scheduled on a timer that was dropped (a lost connection takes the hub's timers along)
    now = [100.0]
    scheduled: list[float] = []
    flush = EventFlush(lambda delay, _cb: scheduled.append(delay), lambda: None, clock=lambda: now[0])
    flush.request()
    # When events keep coming: within the stale time they wait for it, past it one more flush is scheduled
    now[0] += _STALE_S / 2
    flush.request()
    assert scheduled == [EVENT_FLUSH_S]
    now[0] += _STALE_S
    flush.request()
    assert scheduled == [EVENT_FLUSH_S, EVENT_FLUSH_S]


def test_worker_nodes_run_the_fleet_consumer() -> None:
    conf = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert conf["worker_consumer"] == "workers.consumer:Consumer" and conf["worker_send_task_events"] is True
