"""Where a run's job time went: the stages each job's result records (``environment[JOB_TIMINGS_KEY]``), summed.

A job's child records its own stages (``render_s``, ``pytest_start_s``, ``build_s``, ``forward_s``,
``generate_s``, ``loop_s``, ``teardown_s``, ``pytest_s`` for the whole pytest session) and the executor adds
the runner's (``entry_s``: the job body; ``runner_s``: fork, box, environment, result write and exit;
``child_s``: fork to exit). One query reads them all; the sums and percentiles are taken here.

The benchmark's timing loops say how each ended (``environment[LOOPS_KEY]``: converged, max duration...);
:func:`collect_loop_endings` counts them per metric and ending with their median samples, seconds and precision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from accelerate_core.constants import JOB_TIMINGS_KEY, LOOPS_KEY
from accelerate_core.report.model import LoopEnding, StageTiming

if TYPE_CHECKING:
    from accelerate_core.store import ResultsStore

__all__ = ["STAGE_ORDER", "collect_loop_endings", "collect_stages", "summarise_loops", "summarise_stages"]

STAGE_ORDER: Final = (
    "render_s",
    "pytest_start_s",
    "build_s",
    "forward_s",
    "generate_s",
    "loop_s",
    "tests_s",
    "teardown_s",
    "pytest_s",
    "entry_s",
    "runner_s",
    "child_s",
)
"""The stages in the order a job goes through them (sub-stages first, then the totals they add up to)."""


def collect_stages(store: ResultsStore, run_id: str) -> list[StageTiming]:
    """The per-stage totals and percentiles of the run's jobs (jobs that recorded no stage add nothing)."""
    rows = store.query(
        f"SELECT json_extract_string(environment, '$.{JOB_TIMINGS_KEY}') FROM jobs "
        f"WHERE run_id = ? AND json_extract_string(environment, '$.{JOB_TIMINGS_KEY}') IS NOT NULL",
        [run_id],
    )
    return summarise_stages(json.loads(text) for (text,) in rows)


def summarise_stages(jobs: Iterable[Mapping[str, Any]]) -> list[StageTiming]:
    """Per stage: how many jobs recorded it, the sum, mean, p50, p90 and max (in :data:`STAGE_ORDER`)."""
    values: dict[str, list[float]] = {}
    for timings in jobs:
        if not isinstance(timings, Mapping):
            continue
        for stage, value in timings.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(str(stage), []).append(float(value))
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    ordered = sorted(values, key=lambda s: (rank.get(s, len(rank)), s))
    return [_stage(name, sorted(values[name])) for name in ordered]


def _stage(name: str, ordered: list[float]) -> StageTiming:
    total = sum(ordered)
    return StageTiming(
        stage=name.removesuffix("_s"),
        jobs=len(ordered),
        total_s=total,
        mean_s=total / len(ordered),
        p50_s=_quantile(ordered, 0.5),
        p90_s=_quantile(ordered, 0.9),
        max_s=ordered[-1],
    )


def collect_loop_endings(store: ResultsStore, run_id: str) -> list[LoopEnding]:
    """How the run's timing loops ended, per metric and ending (jobs that recorded no loop add nothing)."""
    rows = store.query(
        f"SELECT json_extract(environment, '$.{LOOPS_KEY}') FROM jobs "
        f"WHERE run_id = ? AND json_extract(environment, '$.{LOOPS_KEY}') IS NOT NULL",
        [run_id],
    )
    return summarise_loops(loop for (text,) in rows for loop in _json_list(text))


def summarise_loops(loops: Iterable[Mapping[str, Any]]) -> list[LoopEnding]:
    """Per (metric, ending), sorted: the loops' count and median ``n``, ``loop_s``, ``ci_rel`` (and its p90)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for loop in loops:
        if isinstance(loop, Mapping) and isinstance(loop.get("n"), int) and _number(loop.get("loop_s")):
            groups.setdefault((str(loop.get("metric")), str(loop.get("stopped_by"))), []).append(loop)
    out = []
    for (metric, stopped_by), found in sorted(groups.items()):
        cis = sorted(float(x["ci_rel"]) for x in found if _number(x.get("ci_rel")))
        out.append(LoopEnding(
            metric=metric,
            stopped_by=stopped_by,
            loops=len(found),
            p50_n=_quantile(sorted(float(x["n"]) for x in found), 0.5),
            p50_loop_s=_quantile(sorted(float(x["loop_s"]) for x in found), 0.5),
            p50_ci_rel=_quantile(cis, 0.5) if cis else None,
            p90_ci_rel=_quantile(cis, 0.9) if cis else None,
        ))  # fmt: skip
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_list(text: Any) -> list[Any]:
    value = json.loads(text) if isinstance(text, str) else text
    return value if isinstance(value, list) else []


def _quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
