"""Benchmark of the results store and the report, on SYNTHETIC rows (made-up timings, nothing measured).

Prints JSON:
  * ``ingest``: the writer's rate for batched measurement rows (``ResultsStore.record_results``: one
    transaction per batch of ``--batch`` jobs into a fresh store whose run was planned first, as the writer
    finds it: the planned rows updated, the measurements inserted from an Arrow C stream), the same at
    other batch sizes (``by_batch_jobs``: 250, ``--batch`` and the fleet writer's ``BATCH_MAX``, the most
    it writes in one transaction when results queue up), and, in the same run, the bare insert of the same
    rows into a plain table three ways: ``executemany``, the numpy relation the writer used before, and
    the Arrow table it uses now.
  * ``report``: the time to build (and, apart, to render) the full report of a run of
    800 models x 4 hardware kinds x 3 shapes x 50 samples, compared with a baseline run of that size,
    each in a fresh process as `accel report` runs, alternating with the report as it was before (its
    comparison through scipy.stats, ~0.9 s of import); both must write identical files.

Usage: ``python benchmarks/bench_store.py [--models 800] [--jobs 2000] [--batch 500] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accelerate_core.constants import HARDWARE_KINDS
from accelerate_core.contracts import JobResult
from accelerate_core.report import build_report, write_report
from accelerate_core.store import ResultsStore
from accelerate_core.store import batch as store_batch
from accelerate_core.store.synthetic import SyntheticRun
from workers.writer import BATCH_MAX

SHAPES = ((1, 16), (4, 16), (8, 64))
MODALITIES = ("text", "vision", "audio", "multimodal")


def _run(run_id: str, models: int, hardware: tuple[str, ...], created: float, samples: int = 50) -> SyntheticRun:
    names = [f"model{i:04d}" for i in range(models)]
    mods = {m: MODALITIES[i % len(MODALITIES)] for i, m in enumerate(names)}
    return SyntheticRun(
        run_id,
        phase="bench",
        models=names,
        hardware=hardware,
        shapes=SHAPES,
        samples=samples,
        created_at=created,
        slots=8,
        modalities=mods,
        seed=int(created),
    )


def _results(run: SyntheticRun, slower: float = 0.0) -> list[JobResult]:
    out = []
    for i, m in enumerate(run.models):
        for j, hw in enumerate(run.hardware):
            base = 0.01 * (1 + i % 7) / (1 if hw == "cpu" else 4)
            if i % 50 == 7 and hw != "cpu":
                out.append(run.result(m, hw, status="failed", start=run.created_at + i, duration=0.5))
                continue
            latency = base * (1 + slower) if i % 10 == 0 else base
            out.append(run.result(m, hw, latency=latency, spread=0.05, start=run.created_at + i + j, duration=2.0))
    return out


def bench_ingest(tmp: Path, jobs: int, batch: int, repeats: int) -> dict[str, object]:
    """The batched writer, then the same rows through executemany, a numpy relation and an Arrow table."""
    run = _run("ingest", jobs, ("cpu",), 1.0)
    results = _results(run)
    rows_per_job = len(results[0].measurements)
    walls, cpus, n_rows = _ingest(tmp, run, results, batch, repeats)
    by_batch = {}
    for size in sorted({250, batch, BATCH_MAX}):
        w, c, _ = (walls, cpus, n_rows) if size == batch else _ingest(tmp, run, results, size, repeats)
        by_batch[str(size)] = {"rows_per_s": round(n_rows / min(w)), "rows_per_cpu_s": round(n_rows / min(c))}
    sample = results[: max(1, 2000 // rows_per_job)]
    slow = [_executemany(sample) for _ in range(repeats)]
    slow_rows, slow_s, slow_cpu = slow[0][0], min(s[1] for s in slow), min(s[2] for s in slow)
    rate, slow_rate = n_rows / min(walls), slow_rows / slow_s
    raw = {path: min(_bulk(results, batch, path) for _ in range(repeats)) for path in ("numpy", "arrow")}
    return {
        "measurement_rows": n_rows,
        "jobs": len(results),
        "measurements_per_job": rows_per_job,
        "batch_jobs": batch,
        "samples_per_latency_row": run.samples,
        "repeats": repeats,
        "batched_wall_s": [round(w, 3) for w in walls],
        "batched_rows_per_s": round(rate),
        "batched_rows_per_cpu_s": round(n_rows / min(cpus)),
        "by_batch_jobs": by_batch,
        "writer_batch_max": BATCH_MAX,
        "executemany_rows": slow_rows,
        "executemany_rows_per_s": round(slow_rate),
        "executemany_rows_per_cpu_s": round(slow_rows / slow_cpu),
        "speedup_vs_executemany": round(rate / slow_rate, 1),
        "cpu_speedup_vs_executemany": round(n_rows / min(cpus) / (slow_rows / slow_cpu), 1),
        "insert_only_rows_per_cpu_s": {path: round(n_rows / s) for path, s in raw.items()},
        "insert_only_arrow_vs_numpy": round(raw["numpy"] / raw["arrow"], 2),
        "target_rows_per_s": 250_000,
        "meets_target": rate >= 250_000,
    }


def _ingest(
    tmp: Path, run: SyntheticRun, results: list[JobResult], batch: int, repeats: int
) -> tuple[list[float], list[float], int]:
    """Record ``results`` ``batch`` jobs at a time into a fresh store per repeat; (wall s, CPU s, measurement rows)."""
    walls, cpus, n_rows = [], [], 0
    for k in range(repeats):
        with ResultsStore.open(tmp / f"ingest-{batch}-{k}.duckdb") as store:
            store.record_run(run.plan())
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(results), batch):
                store.record_results(results[i : i + batch])
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            n_rows = int(store.query("SELECT count(*) FROM measurements")[0][0])
    return walls, cpus, n_rows


_PLAIN = (
    "CREATE TABLE m (job_key VARCHAR, run_id VARCHAR, metric VARCHAR, unit VARCHAR, batch_size INTEGER,"
    " seq_len INTEGER, samples DOUBLE[], n INTEGER)"
)
_PLAIN_TYPES = {
    "job_key": "VARCHAR",
    "run_id": "VARCHAR",
    "metric": "VARCHAR",
    "unit": "VARCHAR",
    "batch_size": "INTEGER",
    "seq_len": "INTEGER",
    "samples": "DOUBLE[]",
    "n": "INTEGER",
}


def _plain_rows(results: list[JobResult]) -> list[tuple[object, ...]]:
    return [
        (r.key, r.run_id, m.metric, m.unit, m.batch_size, m.seq_len, list(m.samples), len(m.samples))
        for r in results
        for m in r.measurements
    ]


def _executemany(results: list[JobResult]) -> tuple[int, float, float]:
    """The slow path, same rows, same table shape: one INSERT per row (in one transaction); (rows, wall s, CPU s)."""
    rows = _plain_rows(results)
    import duckdb

    conn = duckdb.connect()
    conn.execute(_PLAIN)
    t0, c0 = time.perf_counter(), time.process_time()
    conn.execute("BEGIN TRANSACTION")
    conn.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.close()
    return len(rows), elapsed, cpu


def _bulk(results: list[JobResult], batch: int, path: str) -> float:
    """CPU seconds to insert every measurement row into the plain table, ``batch`` jobs per INSERT ... SELECT,
    through the writer's Arrow relation or the numpy relation it replaced (each built inside the clock)."""
    import duckdb

    batches = [
        dict(zip(_PLAIN_TYPES, map(list, zip(*_plain_rows(results[i : i + batch]), strict=True)), strict=True))
        for i in range(0, len(results), batch)
    ]
    build = store_batch.arrow_relation if path == "arrow" else store_batch.numpy_relation
    conn = duckdb.connect()
    conn.execute(_PLAIN)
    c0 = time.process_time()
    for cols in batches:
        conn.register("b", build(cols, _PLAIN_TYPES))
        conn.execute("INSERT INTO m SELECT * FROM b")
        conn.unregister("b")
    elapsed = time.process_time() - c0
    conn.close()
    return elapsed


def bench_report(tmp: Path, models: int, repeats: int) -> dict[str, object]:
    """Ingest two full-size runs, then time the report of the second against the first, each time in a fresh
    process as `accel report` does it, alternating the report as it is with its scipy.stats comparison (before)."""
    base, cur = _run("bench-base", models, HARDWARE_KINDS, 1000.0), _run("bench-cur", models, HARDWARE_KINDS, 2000.0)
    db = tmp / "report.duckdb"
    with ResultsStore.open(db) as store:
        ingest_s = 0.0
        for run, slower in ((base, 0.0), (cur, 0.3)):
            results = _results(run, slower)
            store.record_run(run.plan())
            t0 = time.perf_counter()
            for i in range(0, len(results), 400):
                store.record_results(results[i : i + 400])
            ingest_s += time.perf_counter() - t0
        n_rows = int(store.query("SELECT count(*) FROM measurements")[0][0])
    legs: dict[str, list[dict[str, Any]]] = {"now": [], "scipy_stats_before": []}
    for k in range(repeats):
        for leg, times in legs.items():
            times.append(_report_process(db, cur.run_id, tmp / f"out-{leg}-{k}", scipy=leg != "now"))
    best = {leg: min(times, key=lambda t: t["total_s"]) for leg, times in legs.items()}
    now, before = best["now"], best["scipy_stats_before"]
    same = all(
        (tmp / f"out-now-0/report.{ext}").read_bytes() == (tmp / f"out-scipy_stats_before-0/report.{ext}").read_bytes()
        for ext in ("md", "html", "json")
    )
    return {
        "models": models,
        "hardware": list(HARDWARE_KINDS),
        "shapes": len(SHAPES),
        "samples": cur.samples,
        "jobs_per_run": now["jobs"],
        "measurement_rows_in_store": n_rows,
        "ingest_two_runs_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(n_rows / ingest_s),
        "repeats": repeats,
        "open_and_build_report_s": now["build_s"],
        "render_md_html_json_s": now["render_s"],
        "total_s": now["total_s"],
        "total_cpu_s": now["total_cpu_s"],
        "before_scipy_stats": {k: before[k] for k in ("build_s", "render_s", "total_s", "total_cpu_s")},
        "speedup_vs_before": round(before["total_s"] / now["total_s"], 2),
        "cpu_speedup_vs_before": round(before["total_cpu_s"] / now["total_cpu_s"], 2),
        "identical_output": same,
        "target_s": 1.5,
        "meets_target": now["total_s"] <= 1.5,
        "regressions_found": now["regressions"],
        "compared_shapes": now["compared"],
        "file_bytes": {ext: (tmp / f"out-now-0/report.{ext}").stat().st_size for ext in ("md", "html", "json")},
    }


def _report_process(db: Path, run_id: str, out: Path, *, scipy: bool) -> dict[str, Any]:
    """Time one report in a fresh process (imports included, as `accel report` pays them)."""
    cmd = [sys.executable, __file__, "--report-child", str(db), run_id, str(out)] + (["--scipy"] if scipy else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def _report_child(db: Path, run_id: str, out: Path, *, scipy: bool) -> dict[str, Any]:
    """Build and write the report; ``scipy``: every comparison through scipy.stats, as before numpy took it over."""
    from accelerate_core.report import stats

    if scipy:
        stats._asymptotic_p = lambda x, y: None  # type: ignore[assignment]
    t0, c0 = time.perf_counter(), time.process_time()
    with ResultsStore.open(db, read_only=True) as store:
        report = build_report(store, run_id, use_catalog=False, now=0.0)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    write_report(report, out)
    render_s = time.perf_counter() - t1
    assert report.comparison is not None
    return {
        "build_s": round(build_s, 3),
        "render_s": round(render_s, 3),
        "total_s": round(build_s + render_s, 3),
        "total_cpu_s": round(time.process_time() - c0, 3),
        "build_cpu_s": round(build_cpu, 3),
        "jobs": len(report.rows),
        "regressions": len(report.comparison.regressions),
        "compared": report.comparison.compared,
    }


def _duckdb_version() -> str:
    import duckdb

    return str(duckdb.__version__)


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print their JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=800)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report-child", nargs=3, metavar=("DB", "RUN_ID", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--scipy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report_child:
        db, run_id, out = args.report_child
        print(json.dumps(_report_child(Path(db), run_id, Path(out), scipy=args.scipy)))
        return 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        figures = {
            "synthetic": True,
            "note": "synthetic rows: made-up timings generated for this benchmark, not measurements",
            "python": platform.python_version(),
            "duckdb": _duckdb_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "ingest": bench_ingest(tmp, args.jobs, args.batch, args.repeats),
            "report": bench_report(tmp, args.models, args.repeats),
        }
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
