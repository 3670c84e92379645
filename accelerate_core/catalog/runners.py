"""How ``models check`` isolates each type: one child of the project's fork server per type.

The runner yields ``(model_type, result dict)`` pairs in completion order, where a result is what
:func:`~accelerate_core.catalog.check.check_one` returned, or a classified runner failure
(``timeout``, ``out-of-memory``, ``crashed``) with ``wall_s`` and ``peak_rss_mb``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate_core.contracts import ModelSource

ENTRY = "accelerate_core.catalog.check:check_job"
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "accelerate_core.catalog.api",
    "accelerate_core.catalog.fillers",
    "accelerate_core.catalog.multimodal",
)

Runner = Callable[[Sequence["ModelSource"]], Iterator[tuple[str, dict[str, Any]]]]
"""Runs each source (a model type, or a checkpoint: its ``path``) and yields ``(label, result)``."""


def _from_outcome(outcome: Any) -> dict[str, Any]:
    base = {"wall_s": round(float(outcome.duration_s), 4), "peak_rss_mb": outcome.peak_rss_mb}
    if outcome.ok and isinstance(outcome.value, dict):
        return {**outcome.value, **base}
    return {
        **base,
        "ok": False,
        "phase": "runner",
        "error_class": outcome.error_class,
        "error_type": outcome.error_type,
        "error_message": (outcome.error_message or "")[:1000],
    }


def fork_server(*, jobs: int, timeout_s: float, mem_cap_mb: float) -> Runner:
    """A runner that sends each model to :class:`accelerate_core.runner.ForkServer`, ``jobs`` at a time."""

    def run(sources: Sequence[ModelSource]) -> Iterator[tuple[str, dict[str, Any]]]:
        from accelerate_core.runner import ForkServer

        env = {"OMP_NUM_THREADS": "1"} if jobs > 1 else {}
        pending = list(sources)[::-1]
        in_flight = 0
        with ForkServer(ENTRY, preload=PRELOAD, max_children=jobs) as server:
            while pending or in_flight:
                while pending and in_flight < jobs:
                    s = pending.pop()
                    payload = {"model_type": s.model_type, "checkpoint": s.path}  # a type: None
                    server.submit(s.label, payload, env=env, time_limit_s=timeout_s, mem_cap_mb=int(mem_cap_mb))
                    in_flight += 1
                for outcome in server.poll(timeout=5.0):
                    in_flight -= 1
                    yield outcome.job_id, _from_outcome(outcome)

    return run
