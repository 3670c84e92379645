"""When has a fleet run that ``accel run --wait`` follows stalled? One line saying why and what to do.

A followed run stalls when

- no job of it finished for ``settings.stall_s`` seconds;
- no writer has published a heartbeat (:mod:`accelerate_core.liveness`) for ``grace_s``: nothing
  records the results, so nothing can progress;
- a target (a hardware kind, or one device model of it: ``JobSpec.target``) with unfinished jobs of the run has
  had no live worker consuming its queue (``hw.cuda``, ``hw.cuda.h100-80gb-hbm3``) for ``grace_s``.

:class:`StallWatch` is pure (the caller passes the snapshots, what is alive, and the clock); ``follow`` in
:mod:`scheduler.remote` feeds it and raises :class:`~accelerate_core.errors.RunStalledError` with its line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from accelerate_core.constants import TERMINAL_STATUSES, hardware_kind
from accelerate_core.contracts import StatusSnapshot

__all__ = ["LIVENESS_GRACE_S", "Liveness", "StallWatch", "waiting_by_target"]

LIVENESS_GRACE_S = 30.0
"""How long a missing writer or worker is tolerated (a restart, a missed ping) before it is a stall, in seconds."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """What is alive on the broker now: a writer (its heartbeat), and the queues live workers consume."""

    writer: bool
    served: frozenset[str]
    """Queue names (``hw.cpu``, ``hw.cuda.h100-80gb-hbm3``): a node of one device model serves no other model's."""


def waiting_by_target(snapshot: StatusSnapshot) -> dict[str, int]:
    """Unfinished jobs of the run per target (``cuda``, ``cuda.h100``; none left: left out; ``api:NAME`` is ``api``)."""
    out: dict[str, int] = {}
    for hardware, counts in snapshot.by_hardware.items():
        left = int(counts.get("total", 0)) - sum(int(v) for k, v in counts.items() if k in TERMINAL_STATUSES)
        if left > 0:
            target = hardware_kind(hardware)
            out[target] = out.get(target, 0) + left
    return out


@dataclass
class StallWatch:
    """Watches one run's progress and what serves it; :meth:`observe` returns the stall line, or None.

    Args:
        run_id: the run.
        stall_s: seconds without a finished job that make a stall.
        queue_for: a target's queue name (``Settings.queue_for``: ``cuda`` -> ``hw.cuda``, ``cuda.h100`` ->
            ``hw.cuda.h100``).
        started: the clock's time when following began.
        grace_s: how long a missing writer or worker is tolerated.
    """

    run_id: str
    stall_s: float
    queue_for: Callable[[str], str]
    started: float
    grace_s: float = LIVENESS_GRACE_S
    _terminal: int = -1
    _progress_at: float = 0.0
    _writer_gone_since: float | None = None
    _live: Liveness | None = None
    _unserved_since: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._progress_at = self.started
        self.grace_s = min(self.grace_s, self.stall_s)

    def observe(self, snapshot: StatusSnapshot | None, live: Liveness | None, now: float) -> str | None:
        """The stall line given the latest snapshot (None: none yet) and liveness (None: not probed now), or None."""
        if snapshot is not None and snapshot.terminal != self._terminal:
            self._terminal, self._progress_at = snapshot.terminal, now
        self._live = live or self._live  # the latest probe stands until the next
        stalled = now - self._progress_at >= self.stall_s
        if self._live is not None:
            # A missing writer or worker is the cause to name, past its grace or once the run stalled anyway.
            found = self._writer_line(self._live, now, stalled) or self._worker_line(snapshot, self._live, now, stalled)
            if found:
                return found
        if stalled:
            done = f"{snapshot.terminal}/{snapshot.total} finished" if snapshot is not None else "no status yet"
            return (
                f"run {self.run_id} stalled: no job finished for {now - self._progress_at:.0f} s ({done}); "
                f"check `accel status {self.run_id}` and the workers' logs, then `accel run --resume {self.run_id} "
                "--wait` (it re-sends jobs whose message vanished)"
            )
        return None

    def _writer_line(self, live: Liveness, now: float, stalled: bool) -> str | None:
        if live.writer:
            self._writer_gone_since = None
            return None
        if self._writer_gone_since is None:
            self._writer_gone_since = now
        if now - self._writer_gone_since < self.grace_s and not stalled:
            return None
        return (
            f"run {self.run_id} stalled: no live writer on the broker for {now - self._writer_gone_since:.0f} s, "
            "so no result is recorded: start one (`accel writer`), then follow the run again with "
            f"`accel run --resume {self.run_id} --wait`"
        )

    def _worker_line(self, snapshot: StatusSnapshot | None, live: Liveness, now: float, stalled: bool) -> str | None:
        waiting = waiting_by_target(snapshot) if snapshot is not None else {}
        unserved = {t for t in waiting if self.queue_for(t) not in live.served}
        self._unserved_since = {t: self._unserved_since.get(t, now) for t in unserved}
        for target in sorted(unserved):
            if now - self._unserved_since[target] >= self.grace_s or stalled:
                return (
                    f"run {self.run_id} stalled: {waiting[target]} of its jobs wait on {self.queue_for(target)} and "
                    f"no live worker has consumed it for {now - self._unserved_since[target]:.0f} s: start one "
                    f"({start_hint(target)}), then `accel run --resume {self.run_id} --wait`"
                )
        return None


def start_hint(target: str) -> str:
    """How to start a worker for ``target``: ``accel worker --hardware KIND``, on a node of its device model if any."""
    kind, _, model = target.partition(".")
    command = f"`accel worker --hardware {kind}`"
    return f"{command} on a {model} node" if model else command
