"""``accel status --watch``: reads until the run is done, prints only changes off a terminal, Ctrl-C is a clean stop."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accelerate_core.contracts import StatusSnapshot
from scheduler.cli.watch import watch
from scheduler.status import RunStatus


def _reads(*terminals: int, total: int = 3) -> Callable[[], RunStatus]:
    snaps = iter(terminals)

    def read() -> RunStatus:
        done = next(snaps)
        snap = StatusSnapshot(run_id="r", phase="p", status="complete" if done == total else "running",
                              total=total, terminal=done, phase_done=done == total)  # fmt: skip
        return RunStatus(snap, "db")

    return read


def _render(status: RunStatus) -> list[str]:
    return [f"{status.snapshot.terminal}/{status.snapshot.total}"]


def test_off_a_terminal_a_status_is_printed_when_it_changed_until_the_run_is_done(
    capsys: pytest.CaptureFixture[str],
) -> None:
    slept: list[float] = []
    last = watch(_reads(0, 0, 1, 1, 3), _render, every_s=0.5, live=False, sleep=slept.append)
    assert last is not None and last.snapshot.phase_done
    assert capsys.readouterr().out.splitlines() == ["0/3", "1/3", "3/3"]
    assert slept == [0.5, 0.5, 0.5, 0.5]


def test_on_a_terminal_it_redraws_until_done(capsys: pytest.CaptureFixture[str]) -> None:
    last = watch(_reads(1, 2, 3), _render, every_s=0.1, live=True, sleep=lambda _: None)
    assert last is not None and last.snapshot.terminal == 3
    assert "3/3" in capsys.readouterr().out


def test_ctrl_c_stops_the_watch_cleanly() -> None:
    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    assert watch(_reads(0, 0), _render, live=False, sleep=interrupted) is None
