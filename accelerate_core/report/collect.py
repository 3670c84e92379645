"""Reading one run out of the results store for the report: a few set-wise queries, no per-job query.

Raw samples are not read here (a full run holds millions of them); the comparison reads only the
samples of the shapes whose p50 moved beyond the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from accelerate_core.report.model import ImportTiming, ShapeStats, WorkerRow

if TYPE_CHECKING:
    from accelerate_core.contracts import RunRecord
    from accelerate_core.store import ResultsStore

Pair = tuple[str, str]
"""(model type, hardware kind)."""


@dataclass(slots=True)
class JobFact:
    """The columns of one job row the report uses."""

    job_key: str
    kind: str
    status: str
    error_class: str | None
    error_type: str | None
    error_message: str | None
    attempts: int
    duration_s: float | None
    started_at: float | None
    finished_at: float | None
    template_sha: str | None
    worker_id: str | None
    host: str | None
    device_name: str | None
    source_kind: str | None = None
    source_ref: str | None = None
    source_revision: str | None = None
    dtype: str | None = None
    attn: str | None = None
    device_model: str | None = None
    torch: str | None = None
    transformers: str | None = None
    compile_backend: str | None = None

    @property
    def source(self) -> str | None:
        """``kind:ref@revision`` (revision cut to 12 characters), None for a job planned without a source."""
        if self.source_kind is None:
            return None
        revision = f"@{self.source_revision[:12]}" if self.source_revision else ""
        return f"{self.source_kind}:{self.source_ref}{revision}"  # as accelerate_core.sources.describe_source


@dataclass(slots=True)
class RunData:
    """One run as the report needs it: jobs, latency/throughput per shape, peak memory and load time."""

    run: RunRecord
    jobs: dict[Pair, JobFact] = field(default_factory=dict)
    shapes: dict[Pair, list[ShapeStats]] = field(default_factory=dict)
    peak_memory: dict[Pair, float] = field(default_factory=dict)
    load_time: dict[Pair, float] = field(default_factory=dict)


_JOB_COLUMNS = (
    "model_type, hardware, job_key, kind, status, error_class, error_type, error_message, attempts, "
    "duration_s, started_at, finished_at, template_sha, worker_id, host, device_name, "
    "json_extract_string(spec, '$.source.kind'), json_extract_string(spec, '$.source.ref'), "
    "json_extract_string(spec, '$.source.revision'), json_extract_string(spec, '$.dtype'), "
    "json_extract_string(spec, '$.attn'), json_extract_string(environment, '$.device_model'), "
    "json_extract_string(environment, '$.torch'), json_extract_string(environment, '$.transformers'), "
    "json_extract_string(spec, '$.compile_backend')"
)


def collect_run(store: ResultsStore, run_id: str) -> RunData:
    """The run, its jobs and the summary statistics of its measurements (raises UnknownRunError)."""
    data = RunData(run=store.get_run(run_id))
    for row in store.query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE run_id = ? ORDER BY kind DESC", [run_id]):
        data.jobs[(row[0], row[1])] = JobFact(*row[2:])
    for model, hw, batch, seq, p50, p90, n, thr, unit, mem, load, *split in store.query(_SHAPES_SQL, [run_id]):
        pair = (model, hw)
        if p50 is not None or p90 is not None:
            data.shapes.setdefault(pair, []).append(ShapeStats(batch, seq, p50, p90, n or 0, thr, unit, *split))
        if mem is not None:
            data.peak_memory[pair] = max(mem, data.peak_memory.get(pair, mem))
        if load is not None:
            data.load_time[pair] = load
    return data


# One row per job and shape, the metrics pivoted into columns by DuckDB (a full run has ~10^5
# measurement rows; building Python objects for each would cost more than the whole query).
_SHAPES_SQL = """
SELECT j.model_type, j.hardware, m.batch_size, m.seq_len,
    max(m.p50) FILTER (m.metric = 'latency'),
    max(m.p90) FILTER (m.metric = 'latency'),
    max(m.n) FILTER (m.metric = 'latency'),
    coalesce(max(m.p50) FILTER (m.metric = 'throughput'), max(m.p50) FILTER (m.metric = 'tokens_per_s')),
    coalesce(max(m.unit) FILTER (m.metric = 'throughput'), max(m.unit) FILTER (m.metric = 'tokens_per_s')),
    max(m.p50) FILTER (m.metric = 'peak_memory'),
    max(m.p50) FILTER (m.metric = 'load_time'),
    max(m.p50) FILTER (m.metric = 'ttft'),
    max(m.p50) FILTER (m.metric = 'itl'),
    max(m.p50) FILTER (m.metric = 'compile_time')
FROM measurements m JOIN jobs j USING (job_key)
WHERE m.run_id = ?
GROUP BY ALL
ORDER BY m.batch_size, m.seq_len
"""


def latency_samples(store: ResultsStore, keys: Iterable[str]) -> dict[tuple[str, int, int], list[float]]:
    """Raw latency samples of the given jobs, by (job key, batch size, sequence length)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = store.query(
        """SELECT job_key, batch_size, seq_len, samples FROM measurements
           WHERE metric = 'latency' AND job_key IN (SELECT unnest($keys))""",
        {"keys": wanted},
    )
    return {(k, b, s): list(samples or ()) for k, b, s, samples in rows}


def collect_workers(store: ResultsStore, run_id: str, data: RunData) -> list[WorkerRow]:
    """The workers that ran the run's jobs, from the workers table or, failing that, the jobs themselves."""
    counts: dict[str, int] = {}
    seen: dict[str, JobFact] = {}
    hardware: dict[str, str] = {}
    for (_, hw), job in data.jobs.items():
        if job.worker_id:
            counts[job.worker_id] = counts.get(job.worker_id, 0) + 1
            seen.setdefault(job.worker_id, job)
            hardware.setdefault(job.worker_id, hw)
    rows = store.query(
        """SELECT worker_id, host, hardware, device_name, device_index, memory_mb, driver, versions
           FROM workers WHERE worker_id IN (SELECT unnest($ids)) ORDER BY hardware, worker_id""",
        {"ids": sorted(counts) or [""]},
    )
    workers = [
        WorkerRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]) if r[7] else {}, counts[r[0]])
        for r in rows
    ]
    known = {w.worker_id for w in workers}
    envs = _environments(store, {seen[w].job_key: w for w in counts if w not in known})
    for worker_id in sorted(set(counts) - known):
        job = seen[worker_id]
        env = envs.get(worker_id, {})
        device = job.device_name or env.get("device_name")
        versions = {k: v for k, v in env.items() if k in _VERSION_KEYS or k.endswith("_version")} or env
        workers.append(
            WorkerRow(
                worker_id,
                job.host,
                hardware[worker_id],
                device_name=None if device is None else str(device),
                versions=versions,
                jobs=counts[worker_id],
            )
        )
    return workers


_VERSION_KEYS = (
    "python",
    "torch",
    "transformers",
    "accelerate_fleet",
    "cuda_runtime",
    "hip_runtime",
    "driver",
    "cpu_model",
    "torch_threads",
)


def _environments(store: ResultsStore, key_to_worker: dict[str, str]) -> dict[str, dict[str, Any]]:
    if not key_to_worker:
        return {}
    rows = store.query(
        "SELECT job_key, environment FROM jobs WHERE job_key IN (SELECT unnest($keys))", {"keys": list(key_to_worker)}
    )
    out: dict[str, dict[str, Any]] = {}
    for key, env in rows:
        parsed = json.loads(env) if env else {}
        out[key_to_worker[key]] = {k: v for k, v in parsed.items() if isinstance(v, str | int | float) and v != ""}
    return out


def collect_import_timings(store: ResultsStore, run_id: str) -> tuple[list[ImportTiming], str]:
    """The run's self-benchmark rows; else the latest recorded batch, with a note saying so."""
    cols = "section, name, n, median_s, stdev_s, min_s, max_s, host"
    rows = store.query(f"SELECT {cols} FROM import_timings WHERE run_id = ? ORDER BY section, median_s DESC", [run_id])
    note = ""
    if not rows:
        rows = store.query(
            f"""SELECT {cols} FROM import_timings
                WHERE recorded_at = (SELECT max(recorded_at) FROM import_timings)
                ORDER BY section, median_s DESC"""
        )
        if rows:
            note = "latest self-benchmark in the store (not recorded with this run)"
    return [ImportTiming(*r) for r in rows], note
