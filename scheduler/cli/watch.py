"""``accel status --watch``: the status read again every few seconds until the run is done (Ctrl-C leaves, exit 0).

On a terminal the status redraws in place; elsewhere (a log, a pipe) a new status is printed only when the
run's progress changed, with no control codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from accelerate_core.database import ctrl_c_kept
from scheduler.cli.common import out

if TYPE_CHECKING:
    from scheduler.status import RunStatus

Read = Callable[[], "RunStatus"]
"""Reads a run's status now."""

Render = Callable[["RunStatus"], list[str]]
"""The lines of a status."""

WATCH_EVERY_S = 2.0
"""How often ``--watch`` reads the status, in seconds."""


def progress_key(status: RunStatus) -> Hashable:
    """What must change for a new status to be printed off a terminal: the run's status and counts."""
    snap = status.snapshot
    return (snap.status, snap.terminal, snap.total, tuple(sorted(snap.by_status.items())), snap.report_dir)


def watch(
    read: Read,
    render: Render,
    *,
    every_s: float = WATCH_EVERY_S,
    live: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus | None:
    """Show ``read()`` rendered until the run is done; return the last status (None: stopped by Ctrl-C first).

    Args:
        read: reads the status now (its errors propagate: one line, as without ``--watch``).
        render: the lines of a status.
        every_s: seconds between two reads.
        live: redraw in place (a terminal); else print a status only when :func:`progress_key` changed.
        sleep: waits between reads (tests pass their own).
    """
    try:
        with ctrl_c_kept():  # Ctrl-C that lands inside a DuckDB read is Ctrl-C too
            if live:
                return _live(read, render, every_s, sleep)
            return _appended(read, render, every_s, sleep)
    except KeyboardInterrupt:
        return None


def _live(
    read: Callable[[], RunStatus],
    render: Callable[[RunStatus], list[str]],
    every_s: float,
    sleep: Callable[[float], None],
) -> RunStatus:
    from rich.live import Live
    from rich.text import Text

    with Live(console=out, auto_refresh=False, transient=False) as view:
        while True:
            status = read()
            view.update(Text("\n".join(render(status))), refresh=True)
            if status.snapshot.phase_done:
                return status
            sleep(every_s)


def _appended(
    read: Callable[[], RunStatus],
    render: Callable[[RunStatus], list[str]],
    every_s: float,
    sleep: Callable[[float], None],
) -> RunStatus:
    shown: Hashable = None
    while True:
        status = read()
        key = progress_key(status)
        if key != shown:
            for line in render(status):
                out.print(line, markup=False)
            shown = key
        if status.snapshot.phase_done:
            return status
        sleep(every_s)
