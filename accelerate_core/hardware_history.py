"""How each model did last time on each hardware target (kind and device model): one query for every model.

``--hardware best`` picks, per model, the fastest target whose latest result passed (``scheduler.best``). The
store answers that with one set-wise query (:data:`LATEST_SQL`); the choice per model is then a dict lookup.
A target is ``(kind, device model)``: the device model a result recorded (``environment.device_model``), or
``""`` for a row written before results recorded one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from accelerate_core.constants import JOB_KIND_TEST, STATUS_DONE, STATUS_FAILED, STATUS_TIMEOUT

VERDICT_STATUSES: Final = (STATUS_DONE, STATUS_FAILED, STATUS_TIMEOUT)
"""Statuses that say how a model did on a target (skipped, cancelled and lost rows never ran it to an end)."""

LATEST_SQL: Final = f"""
WITH latest AS (
    SELECT j.model_type, j.hardware,
           coalesce(json_extract_string(j.environment, '$.device_model'), '') AS device_model,
           arg_max(j.job_key, r.created_at) AS job_key,
           arg_max(j.status, r.created_at) AS status,
           arg_max(j.run_id, r.created_at) AS run_id
    FROM jobs j JOIN runs r USING (run_id)
    WHERE j.kind = '{JOB_KIND_TEST}' AND j.status IN {VERDICT_STATUSES!r}
    GROUP BY ALL
),
p50 AS (
    SELECT job_key, arg_min(p50, batch_size * 1000000 + seq_len) AS p50_s
    FROM measurements
    WHERE metric = 'latency' AND job_key IN (SELECT job_key FROM latest)
    GROUP BY job_key
)
SELECT l.model_type, l.hardware, l.device_model, l.status, p.p50_s, l.run_id
FROM latest l LEFT JOIN p50 p USING (job_key)
ORDER BY l.model_type, p.p50_s NULLS LAST, l.hardware, l.device_model
"""
"""Per model and target, its latest verdict row (the run created last) and that row's p50 latency at its smallest
shape."""


@dataclass(frozen=True, slots=True)
class Seen:
    """A model's latest result on one target: its status, its p50 latency (s) and the run it is from."""

    hardware: str
    device_model: str
    status: str
    p50_s: float | None
    run_id: str

    @property
    def target(self) -> str:
        """``kind:model`` (``cuda:h100-80gb-hbm3``), or the kind alone when no model was recorded."""
        return f"{self.hardware}:{self.device_model}" if self.device_model else self.hardware

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {"target": self.target, "status": self.status, "p50_s": self.p50_s, "run_id": self.run_id}


def latest_outcomes(query: Callable[[str], Sequence[Sequence[Any]]]) -> dict[str, list[Seen]]:
    """``{model type: [Seen, ...]}``, each model's targets fastest first (rows without a p50 last)."""
    return group_rows(query(LATEST_SQL))


def group_rows(rows: Iterable[Sequence[Any]]) -> dict[str, list[Seen]]:
    """Rows of :data:`LATEST_SQL` (or of the results service's answer) grouped by model, in their order."""
    out: dict[str, list[Seen]] = {}
    for model, hardware, device_model, status, p50, run_id in rows:
        seen = Seen(
            str(hardware), str(device_model or ""), str(status), None if p50 is None else float(p50), str(run_id)
        )
        out.setdefault(str(model), []).append(seen)
    return out


def as_rows(history: Mapping[str, Sequence[Seen]]) -> list[list[Any]]:
    """The inverse of :func:`group_rows` (the results service's JSON answer)."""
    return [[m, s.hardware, s.device_model, s.status, s.p50_s, s.run_id] for m, seen in history.items() for s in seen]
