"""Benchmark of the results store and the report, on SYNTHETIC rows (made-up timings, nothing measured).

Prints JSON:
  * ``ingest``: the writer's rate for batched measurement rows (``ResultsStore.record_results``: one
    transaction per batch, jobs upserted, measurements replaced through a registered Arrow table), and,
    in the same run, the bare insert of the same rows into a plain table three ways: ``executemany``,
    the numpy relation the writer used before, and the Arrow table it uses now.
  * ``report``: the time to build (and, apart, to render) the full report of a run of
    800 models x 4 hardware kinds x 3 shapes x 50 samples, compared with a baseline run of that size.

Usage: ``python benchmarks/bench_store.py [--models 800] [--jobs 2000] [--batch 250] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from accelerate_core.constants import HARDWARE_KINDS
from accelerate_core.contracts import JobResult
from accelerate_core.report import build_report, write_report
from accelerate_core.store import ResultsStore
from accelerate_core.store import batch as store_batch
from accelerate_core.store.synthetic import SyntheticRun

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
    walls, cpus, n_rows = [], [], 0
    for k in range(repeats):
        with ResultsStore.open(tmp / f"ingest-{k}.duckdb") as store:
            store.record_run(run.plan())
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(results), batch):
                store.record_results(results[i : i + batch])
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            n_rows = int(store.query("SELECT count(*) FROM measurements")[0][0])
    sample = results[: max(1, 2000 // rows_per_job)]
    slow = [_executemany(sample) for _ in range(repeats)]
    slow_rows, slow_s = slow[0][0], min(s for _, s in slow)
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
        "executemany_rows": slow_rows,
        "executemany_rows_per_s": round(slow_rate),
        "speedup_vs_executemany": round(rate / slow_rate, 1),
        "insert_only_rows_per_s": {path: round(n_rows / s) for path, s in raw.items()}
        | {"executemany": round(slow_rate)},
        "insert_only_arrow_vs_numpy": round(raw["numpy"] / raw["arrow"], 2),
        "target_rows_per_s": 250_000,
        "meets_target": rate >= 250_000,
    }


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


def _executemany(results: list[JobResult]) -> tuple[int, float]:
    """The slow path, same rows, same table shape: one INSERT per row (in one transaction)."""
    rows = _plain_rows(results)
    import duckdb

    conn = duckdb.connect()
    conn.execute(_PLAIN)
    t0 = time.perf_counter()
    conn.execute("BEGIN TRANSACTION")
    conn.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows), elapsed


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


def bench_report(tmp: Path, models: int) -> dict[str, object]:
    """Ingest two full-size runs, then time the report of the second against the first."""
    base, cur = _run("bench-base", models, HARDWARE_KINDS, 1000.0), _run("bench-cur", models, HARDWARE_KINDS, 2000.0)
    with ResultsStore.open(tmp / "report.duckdb") as store:
        ingest_s = 0.0
        for run, slower in ((base, 0.0), (cur, 0.3)):
            results = _results(run, slower)
            store.record_run(run.plan())
            t0 = time.perf_counter()
            for i in range(0, len(results), 400):
                store.record_results(results[i : i + 400])
            ingest_s += time.perf_counter() - t0
        n_rows = int(store.query("SELECT count(*) FROM measurements")[0][0])
    # As `accel report` does it: open read-only, build (the first build imports scipy), write all formats.
    t0 = time.perf_counter()
    with ResultsStore.open(tmp / "report.duckdb", read_only=True) as store:
        report = build_report(store, cur.run_id, use_catalog=False)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        build_report(store, cur.run_id, use_catalog=False)
        warm_s = time.perf_counter() - t1
    t0 = time.perf_counter()
    paths = write_report(report, tmp / "out")
    render_s = time.perf_counter() - t0
    c = report.comparison
    assert c is not None
    return {
        "models": models,
        "hardware": list(HARDWARE_KINDS),
        "shapes": len(SHAPES),
        "samples": cur.samples,
        "jobs_per_run": len(report.rows),
        "measurement_rows_in_store": n_rows,
        "ingest_two_runs_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(n_rows / ingest_s),
        "open_and_build_report_s": round(build_s, 3),
        "build_report_again_s": round(warm_s, 3),
        "render_md_html_json_s": round(render_s, 3),
        "total_s": round(build_s + render_s, 3),
        "target_s": 3.0,
        "meets_target": build_s + render_s < 3.0,
        "regressions_found": len(c.regressions),
        "compared_shapes": c.compared,
        "file_bytes": {k: p.stat().st_size for k, p in paths.items()},
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
    args = parser.parse_args(argv)
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
            "report": bench_report(tmp, args.models),
        }
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
