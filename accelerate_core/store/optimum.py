"""A run as optimum-benchmark ``benchmark_report.json`` files, one folder per job and shape:
``<model>/<hardware>/<dtype>[-<attn>][-<compile backend>]/b<batch>-s<seq>/`` (the attention kind and the compile
backend when the job chose them).

Each report has optimum-benchmark's keys (``forward.latency`` with ``unit``, ``values``, ``count``, ``total``,
``mean``, ``p50``, ``p90``, ``p95``, ``p99``, ``stdev``, ``stdev_``; ``forward.throughput`` with ``unit`` and
``value``; ``forward.memory`` in MB; ``load.latency``), so dashboards that read optimum-benchmark read our runs.
Our store keeps p50/p90/p99: p95 is computed from the raw samples with the same percentile rule
(:func:`accelerate_core.bench.stats.percentile`), ``None`` when no samples were stored. ``stdev`` is ours (the
sample standard deviation). Throughput follows optimum-benchmark: the batch over the mean latency, or for a
generative model its tokens/s. A generative model's shape also has optimum-benchmark's generation split:
``prefill`` (time to first token, throughput prompt tokens/s), ``per_token`` (each decoded token's latency) and
``decode`` (throughput tokens/s from the per-token mean).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core.bench.stats import percentile
from accelerate_core.errors import StoreError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

REPORT_NAME = "benchmark_report.json"
"""optimum-benchmark's file name, one per job folder."""

_MIB_TO_MB = 2**20 / 1e6

_ROWS = """SELECT m.job_key, j.model_type, j.hardware,
                  concat_ws('-', coalesce(j.spec->>'$.dtype', 'float32'), j.spec->>'$.attn',
                            j.spec->>'$.compile_backend'),
                  m.batch_size, m.seq_len, m.metric, m.unit, m.samples, m.n, m.p50, m.p90, m.p99, m.mean, m.stdev
           FROM measurements m JOIN jobs j USING (job_key)
           WHERE m.run_id = $run AND m.metric IN ('latency', 'tokens_per_s', 'peak_memory', 'load_time', 'ttft', 'itl')
           ORDER BY j.model_type, j.hardware, m.batch_size, m.seq_len, m.metric"""


def optimum_reports(conn: DuckDBPyConnection, run_id: str) -> dict[str, dict[str, Any]]:
    """``{"<model>/<hardware>/<dtype>/b<batch>-s<seq>/benchmark_report.json": report}``, every measured shape.

    A job's load time (measured once, not per shape) is the ``load`` section of each of its shapes' reports.
    """
    reports: dict[str, dict[str, Any]] = {}
    loads: dict[str, dict[str, Any]] = {}
    shapes: dict[str, list[str]] = {}
    for (
        job_key,
        model,
        hardware,
        dtype,
        batch,
        seq,
        metric,
        unit,
        samples,
        n,
        p50,
        p90,
        p99,
        mean,
        stdev,
    ) in conn.execute(_ROWS, {"run": run_id}).fetchall():
        stats = {"unit": unit, "samples": samples, "n": n, "p50": p50, "p90": p90, "p99": p99, "mean": mean}
        stats["stdev"] = stdev
        if metric == "load_time":
            loads[job_key] = {"latency": _latency(stats)}
            continue
        path = f"{_safe(model)}/{_safe(hardware)}/{_safe(dtype)}/b{batch}-s{seq}/{REPORT_NAME}"
        if path not in reports:
            reports[path] = {"forward": {"memory": None, "latency": None, "throughput": None}}
            shapes.setdefault(job_key, []).append(path)
        if metric in _GENERATION:
            reports[path].update(_GENERATION[metric](batch, seq, stats))
        else:
            _add(reports[path]["forward"], metric, batch, stats)
    for job_key, load in loads.items():
        for path in shapes.get(job_key, []):
            reports[path]["load"] = load
    return reports


def write_reports(reports: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write each report at its relative path under ``out_dir``; the files by their folder.

    Raises:
        StoreError: a path leaves ``out_dir`` (a bundle from elsewhere) or a file cannot be written.
    """
    root = out_dir.resolve()
    written: dict[str, Path] = {}
    for relative, report in reports.items():
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target.name != REPORT_NAME:
            raise StoreError(f"optimum export: refusing to write {relative!r} outside {root}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            raise StoreError(f"cannot write {target} ({e}): check the folder") from e
        written[str(Path(relative).parent)] = target
    return written


def _add(forward: dict[str, Any], metric: str, batch: int, stats: dict[str, Any]) -> None:
    if metric == "latency":
        forward["latency"] = _latency(stats)
        if forward["throughput"] is None and stats["mean"]:
            forward["throughput"] = {"unit": "samples/s", "value": batch / stats["mean"]}
    elif metric == "tokens_per_s":
        forward["throughput"] = {"unit": "tokens/s", "value": stats["mean"]}
    elif metric == "peak_memory":
        megabytes = stats["p50"] * _MIB_TO_MB if stats["unit"] == "MiB" else stats["p50"]
        forward["memory"] = {"unit": "MB", "max_allocated": megabytes}


def _prefill(batch: int, seq: int, stats: dict[str, Any]) -> dict[str, Any]:
    """optimum-benchmark's ``prefill``: the time to first token; its throughput is prompt tokens over it."""
    value = batch * seq / stats["mean"] if stats["mean"] else None
    return {"prefill": {"memory": None, "latency": _latency(stats), "throughput": {"unit": "tokens/s", "value": value}}}


def _decode(batch: int, seq: int, stats: dict[str, Any]) -> dict[str, Any]:
    """optimum-benchmark's ``per_token`` latency (one sample per decoded token) and ``decode`` throughput (tokens/s
    over the per-token mean; the whole decode's latency is not stored)."""
    value = batch / stats["mean"] if stats["mean"] else None
    return {
        "per_token": {"memory": None, "latency": _latency(stats), "throughput": None},
        "decode": {"memory": None, "latency": None, "throughput": {"unit": "tokens/s", "value": value}},
    }


_GENERATION: dict[str, Callable[[int, int, dict[str, Any]], dict[str, Any]]] = {"ttft": _prefill, "itl": _decode}
"""The generation split of a generative model's shape: our metric -> its optimum-benchmark sections."""


def _latency(stats: dict[str, Any]) -> dict[str, Any]:
    values = [float(v) for v in stats["samples"] or []]
    mean, stdev = stats["mean"], stats["stdev"]
    return {
        "unit": stats["unit"],
        "values": values,
        "count": stats["n"],
        "total": math.fsum(values) if values else (mean * stats["n"] if mean is not None else None),
        "mean": mean,
        "p50": stats["p50"],
        "p90": stats["p90"],
        "p95": percentile(sorted(values), 95) if values else None,
        "p99": stats["p99"],
        "stdev": stdev,
        "stdev_": stdev / abs(mean) * 100 if stdev is not None and mean else 0.0,
    }


def _safe(name: str) -> str:
    """A path segment of a model or hardware name (``cuda:h100`` → ``cuda_h100``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"
