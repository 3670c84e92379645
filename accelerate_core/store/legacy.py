"""Schema step 2: the JSON columns of a store written before the versioned wire format, rewritten once.

Before schema 2, ``runs.params`` was a free-form dict (skip reasons under ``"skipped"``, shapes beside
``"bench"``) and ``jobs.spec`` a flat dict (``batch_sizes``, ``soft_limit_s``, ...). This step reads each old
value leniently, builds the contract it now is, and writes it back through :mod:`accelerate_core.wire`, so
every later read decodes by the one rule. It runs once, inside the migration's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.config import BenchConfig
from accelerate_core.constants import ERR_UNSUPPORTED
from accelerate_core.contracts import JobLimits, JobSpec, Makespan, RunParams, SkipReason
from accelerate_core.errors import AccelerateError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

__all__ = ["upgrade_json_columns"]


def upgrade_json_columns(conn: DuckDBPyConnection) -> None:
    """Rewrite every unversioned ``runs.params`` and ``jobs.spec`` as its versioned contract."""
    skips: dict[str, Mapping[str, Any]] = {}
    for run_id, raw in conn.execute("SELECT run_id, params FROM runs").fetchall():
        old = _object(raw)
        if wire.VERSION_KEY in old:
            continue
        skipped = old.get("skipped")
        skips.update(skipped if isinstance(skipped, Mapping) else {})
        conn.execute("UPDATE runs SET params = ? WHERE run_id = ?", [_dump(_params(old)), run_id])
    rows = conn.execute("SELECT job_key, spec FROM jobs WHERE spec IS NOT NULL").fetchall()
    for key, raw in rows:
        old = _object(raw)
        if wire.VERSION_KEY not in old:
            try:
                text: str | None = _dump(_spec(key, old, skips.get(key)))
            except AccelerateError:  # not a spec at all: the job keeps its row but cannot be resumed
                text = None
            conn.execute("UPDATE jobs SET spec = ? WHERE job_key = ?", [text, key])


def _object(raw: object) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dump(contract: object) -> str:
    return json.dumps(wire.encode(contract), sort_keys=True)


def _bench(*parts: object) -> BenchConfig:
    known = {f.name for f in fields(BenchConfig)}
    values: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, Mapping):
            values.update({k: tuple(v) if isinstance(v, list) else v for k, v in part.items() if k in known})
    try:
        return BenchConfig(**values)
    except (AccelerateError, TypeError):
        return BenchConfig()


def _params(old: Mapping[str, Any]) -> RunParams:
    shapes = {k: old[k] for k in ("batch_sizes", "seq_lens") if k in old}
    makespan = [m for m in old.get("makespan") or () if isinstance(m, Mapping)]
    return RunParams(
        models=str(old.get("models", "all")),
        modality=old.get("modality") if isinstance(old.get("modality"), str) else None,
        hardware=tuple(str(h) for h in old.get("hardware") or ("cpu",)),
        kind=str(old.get("kind", "test")),
        bench=_bench(old.get("bench"), shapes),
        n_jobs=int(old.get("n_jobs") or 0),
        n_skipped=int(old.get("n_skipped") or 0),
        expected_work_s=float(old.get("expected_work_s") or 0.0),
        history_used=bool(old.get("history_used")),
        slots=int(old["slots"]) if isinstance(old.get("slots"), int) else None,
        makespan=tuple(
            Makespan(
                int(m.get("slots") or 1),
                float(m.get("wall_s") or 0.0),
                float(m.get("busy_s") or 0.0),
                float(m.get("startup_s") or 0.0),
                int(m.get("ran") or 0),
                str(m.get("status") or ""),
            )
            for m in makespan
        ),
        synthetic=bool(old.get("synthetic")),
        modalities={str(k): str(v) for k, v in _mapping(old.get("modalities")).items()},
    )


def _spec(key: str, old: Mapping[str, Any], skip: Mapping[str, Any] | None) -> JobSpec:
    try:
        limits = JobLimits(float(old.get("soft_limit_s", 120.0)), float(old.get("hard_limit_s", 180.0)),
                           int(old.get("mem_cap_mb", 6144)))  # fmt: skip
    except AccelerateError:
        limits = JobLimits()
    bench = old.get("bench") if isinstance(old.get("bench"), Mapping) else {}
    return JobSpec(
        key=key,
        run_id=str(old.get("run_id")),
        model_type=str(old.get("model_type")),
        hardware=str(old.get("hardware")),
        kind=str(old.get("kind")),
        bench=_bench(bench, {k: old[k] for k in ("batch_sizes", "seq_lens") if k in old}),
        limits=limits,
        expected_s=float(old.get("expected_s") or 0.0),
        skip=SkipReason(str(skip.get("reason_class") or ERR_UNSUPPORTED), skip.get("reason")) if skip else None,
        sleep_s=float(_mapping(bench).get("sleep_s") or 0.0),
    )
