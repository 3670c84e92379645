"""Load benchmark of the results service, on SYNTHETIC rows: do API readers slow the writer's ingest?

One process holds the results DB read-write, as the fleet's writer does: a thread ingests at its full
rate (run after run: the run's plan, then the real ``ResultsStore.record_results`` batches, back to back;
every job arrives once), and the same process hosts the results service over that connection
(``ReadSource.open`` gives a cursor of the writer's connection). It tells the service what the writer
will: the store's version is its count of committed batches (answers are cached until the next one), and
it is busy (it always has work waiting here), so reads keep to ``read_share`` of a core. Readers stand for
remote users, so they run in a process of their own: ``--readers`` concurrent clients, each sending its
next request as soon as the last is answered, over a mix of 85 URLs (runs list, one run, pages of results,
models' histories, hardware vs hardware, metrics).

The ingest rate is measured in short windows of ``--seconds``: writer alone (A: readers paused, and every
request they had open answered first) and writer with readers (B: readers asking for ``--settle`` seconds
already), in ABBA order, ``2 x --rounds`` windows. On a shared machine the load of other processes moves
by more than the effect measured, so the figure is the median of the ratios of neighbouring A and B
windows. Prints JSON: ingest jobs/s and measurement rows/s alone and with readers, the ratio (target: a
drop of at most 20%), read latency p50/p90/p99/max as the readers saw it, reads/s while asking, and the
machine's load average.

Usage: ``python benchmarks/bench_api_load.py [--readers 50] [--seconds 8] [--rounds 3] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelerate_core.contracts import JobResult, job_key
from accelerate_core.service import ReadSource, ServiceConfig
from accelerate_core.service.host import HostHooks
from accelerate_core.service.server import ResultsService
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun

SHAPES = ((1, 16), (4, 16), (8, 64))
HARDWARE = ("cpu", "cuda")
PAST_RUNS = 3
INGEST_RUN = "bench-ingest"
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def _run(run_id: str, models: int, created: float) -> SyntheticRun:
    names = tuple(f"model{i:04d}" for i in range(models))
    return SyntheticRun(run_id, phase="bench", models=names, hardware=HARDWARE, shapes=SHAPES, samples=50,
                        created_at=created, slots=8, seed=int(created))  # fmt: skip


def _results(run: SyntheticRun) -> list[JobResult]:
    out = []
    for i, m in enumerate(run.models):
        for hw in run.hardware:
            if i % 50 == 7 and hw != "cpu":
                out.append(run.result(m, hw, status="failed"))
            else:
                out.append(run.result(m, hw, latency=0.01 * (1 + i % 7) / (1 if hw == "cpu" else 4), spread=0.05))
    return out


def prepare(db: Path, models: int) -> list[JobResult]:
    """Write the past runs readers look at; return the results of a run like them (the writer's template)."""
    with ResultsStore.open(db) as store:
        for k in range(PAST_RUNS):
            run = _run(f"bench-past-{k}", models, 1000.0 + k)
            store.record_run(run.plan())
            store.record_results(_results(run))
            store.set_run_status(run.run_id, "complete")
    return _results(_run(INGEST_RUN, models, 2000.0))


class Ingest:
    """The writer's thread: run after run, it records the run's plan, then its results in batches.

    Every job arrives once, as in a fleet run. The results of run ``k`` are the template's with run ``k``'s
    keys; run ``k``'s plan and results are made before its first write (the plan is written and counted).
    """

    def __init__(self, store: ResultsStore, template: list[JobResult], batch: int, models: int) -> None:
        self.store = store
        self.template = template
        self.batch = batch
        self.models = models
        self.rows_per_job = len(template[0].measurements)
        self.jobs = 0
        self.batches = 0
        self.batch_s: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="ingest", daemon=True)

    def _results_of(self, k: int) -> list[JobResult]:
        run_id = f"{INGEST_RUN}-{k}"
        return [replace(r, key=job_key(run_id, r.model_type, r.hardware, r.kind), run_id=run_id) for r in self.template]

    def _loop(self) -> None:
        for k in itertools.count():
            results = self._results_of(k)
            plan = _run(f"{INGEST_RUN}-{k}", self.models, 2000.0 + k).plan()
            self.store.record_run(plan)
            for i in range(0, len(results), self.batch):
                if self.stop.is_set():
                    return
                t0 = time.perf_counter()
                self.store.record_results(results[i : i + self.batch])
                self.batch_s.append(time.perf_counter() - t0)
                self.jobs += len(results[i : i + self.batch])
                self.batches += 1

    def window(self, seconds: float) -> float:
        """Jobs written per second over the next ``seconds``."""
        j0, t0 = self.jobs, time.perf_counter()
        time.sleep(seconds)
        return (self.jobs - j0) / (time.perf_counter() - t0)


def _paths(models: int) -> list[str]:
    names = [f"model{i:04d}" for i in range(models)]
    rng = random.Random(7)
    past = [f"bench-past-{k}" for k in range(PAST_RUNS)]
    live = f"{INGEST_RUN}-0"
    paths = ["/api/runs", f"/api/runs/{live}", f"/api/runs/{live}/results?status=failed", "/metrics"]
    for _ in range(40):
        paths.append(f"/api/runs/{rng.choice(past)}/results?limit=50&offset={rng.randrange(0, 2 * models, 50)}")
        paths.append(f"/api/models/{rng.choice(names)}/history")
    paths.append(f"/api/runs/{past[-1]}/hardware?a=cpu&b=cuda")
    return paths


class Gate:
    """The readers' switch: they ask only while it is open; ``pause`` waits until none is asking."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.asking = 0
        self.idle = asyncio.Event()
        self.idle.set()


async def _reader(base: str, paths: list[str], gate: Gate, seed: int, out: dict[str, Any]) -> None:
    """Ask, wait for the answer, ask again, while the gate is open."""
    from tornado.httpclient import AsyncHTTPClient

    client = AsyncHTTPClient()
    rng = random.Random(seed)
    while True:
        await gate.open.wait()
        gate.asking += 1
        gate.idle.clear()
        t0 = time.perf_counter()
        answer = await client.fetch(base + rng.choice(paths), raise_error=False, request_timeout=600)
        out["latency"].append(time.perf_counter() - t0)
        out["errors"] += answer.code != 200
        gate.asking -= 1
        if gate.asking == 0:
            gate.idle.set()


async def _commands(gate: Gate, out: dict[str, Any]) -> None:
    """Follow ``run``/``pause``/``quit`` lines on stdin; answer ``paused`` once no request is open."""
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "run":
            gate.open.set()
        elif line == "pause":
            gate.open.clear()
            await gate.idle.wait()
            print("paused", flush=True)
        else:
            print(json.dumps(out), flush=True)
            return


async def _readers(base: str, readers: int, models: int) -> None:
    from tornado.httpclient import AsyncHTTPClient

    AsyncHTTPClient.configure(None, max_clients=readers)
    out: dict[str, Any] = {"latency": [], "errors": 0}
    gate = Gate()
    tasks = [asyncio.create_task(_reader(base, _paths(models), gate, i, out)) for i in range(readers)]
    print("ready", flush=True)
    await _commands(gate, out)
    for task in tasks:
        task.cancel()


def client_main(base: str, readers: int, models: int, nice: int) -> None:
    """The readers' process: ask while told to run; on ``quit``, print the latencies as JSON."""
    os.nice(nice)
    asyncio.run(_readers(base, readers, models))


class Readers:
    """The readers' process, switched on and off by the benchmark."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, __file__, "--client", url, "--readers", str(args.readers), "--models",
               str(args.models), "--client-nice", str(args.client_nice)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert self.stdout.readline().strip() == "ready"

    def run(self) -> None:
        """Start asking."""
        self.stdin.write("run\n")
        self.stdin.flush()

    def pause(self) -> None:
        """Stop asking; return once every open request is answered (nothing of theirs is left running)."""
        self.stdin.write("pause\n")
        self.stdin.flush()
        assert self.stdout.readline().strip() == "paused"

    def quit(self) -> dict[str, Any]:
        """End the process; its latencies and errors."""
        self.stdin.write("quit\n")
        self.stdin.flush()
        data: dict[str, Any] = json.loads(self.stdout.readline())
        self.proc.wait(timeout=60)
        return data


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _windows(ingest: Ingest, readers: Readers, args: argparse.Namespace) -> tuple[list[float], list[float], float]:
    """Alone/loaded windows in ABBA order; the readers are paused (and drained) for every alone window."""
    alone, loaded, asking_s = [], [], 0.0
    for k in range(2 * args.rounds):
        if (k % 4) in (0, 3):
            readers.pause()
            alone.append(ingest.window(args.seconds))
            continue
        t0 = time.perf_counter()
        readers.run()
        time.sleep(args.settle)  # every reader asking, the service busy
        loaded.append(ingest.window(args.seconds))
        asking_s += time.perf_counter() - t0
    readers.pause()
    return alone, loaded, asking_s


def measure(db: Path, template: list[JobResult], args: argparse.Namespace) -> dict[str, Any]:
    """The writer ingesting, the service in its process, readers switched on and off; the figures."""
    with ResultsStore.open(db) as store:
        if args.duckdb_threads:
            store.query(f"SET threads = {int(args.duckdb_threads)}")
        ingest = Ingest(store, template, args.batch, args.models)
        source = ReadSource.open(db)  # the writer's own connection, through the registry
        config = ServiceConfig(port=0, read_threads=args.read_threads, read_nice=args.read_nice,
                               read_share=args.read_share)  # fmt: skip
        # As the writer will: the store's version is its count of committed batches, and it is busy
        # whenever work waits (here always: it ingests back to back).
        hooks = HostHooks(version=(lambda: ingest.batches) if args.cache else None, busy=lambda: True)
        with ResultsService(source, config, hooks=hooks) as service:
            readers = Readers(service.url, args)
            ingest.thread.start()
            time.sleep(1.0)  # warm-up: first batches, first queries
            alone, loaded, asking_s = _windows(ingest, readers, args)
            data = readers.quit()
            ingest.stop.set()
            ingest.thread.join()
            rested, hits = service.budget.rested_s, service.cache.hits
        source.close()
    ratios = [b / a for a, b in zip(alone, loaded, strict=True)]  # A_i and B_i are neighbours in ABBA order
    ratio = statistics.median(ratios)
    latencies = data["latency"]
    a, b = statistics.median(alone), statistics.median(loaded)
    return {
        "windows_s": args.seconds,
        "ingest_jobs_per_s_alone": [round(x, 1) for x in alone],
        "ingest_jobs_per_s_with_readers": [round(x, 1) for x in loaded],
        "ingest_jobs_per_s_alone_median": round(a, 1),
        "ingest_jobs_per_s_with_readers_median": round(b, 1),
        "ingest_rows_per_s_alone_median": round(a * ingest.rows_per_job),
        "ingest_rows_per_s_with_readers_median": round(b * ingest.rows_per_job),
        "ingest_ratio_of_neighbouring_windows": [round(r, 2) for r in ratios],
        "ingest_ratio_with_readers": round(ratio, 3),
        "ingest_drop_pct": round(100 * (1 - ratio), 1),
        "target_drop_pct_at_most": 20,
        "meets_target": ratio >= 0.8,
        "batch_write_s_p50": round(_pct(ingest.batch_s, 0.5), 4),
        "reads": len(latencies),
        "read_errors": data["errors"],
        "reads_per_s_while_asking": round(len(latencies) / asking_s, 1),
        "read_threads_rested_s": round(rested, 1),
        "answers_from_cache": hits,
        "read_latency_ms": {q: round(1000 * _pct(latencies, p), 1) for q, p in QUANTILES},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one window")
    parser.add_argument("--rounds", type=int, default=10, help="ABBA half-rounds: 2 x rounds windows in all")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds from switching readers on to a window")
    parser.add_argument("--models", type=int, default=500, help="models per run (each on cpu and cuda)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per ingest batch")
    parser.add_argument("--read-threads", type=int, default=ServiceConfig().read_threads)
    parser.add_argument("--read-nice", type=int, default=ServiceConfig().read_nice)
    parser.add_argument("--read-share", type=float, default=ServiceConfig().read_share)
    parser.add_argument("--duckdb-threads", type=int, default=0, help="DuckDB's threads (0: its default)")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="no answer cache per commit")
    parser.add_argument("--client-nice", type=int, default=0, help="how much nicer the readers' process runs")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client, args.readers, args.models, args.client_nice)
        return 0
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "results.duckdb"
        results = prepare(db, args.models)
        figures = {
            "synthetic": True,
            "note": "synthetic rows: made-up timings generated for this benchmark, not measurements",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "readers": args.readers,
            "read_threads": args.read_threads,
            "read_nice": args.read_nice,
            "read_share": args.read_share,
            "client_nice": args.client_nice,
            "answer_cache_per_commit": args.cache,
            "duckdb_threads": args.duckdb_threads or "default",
            "models": args.models,
            "jobs_per_batch": args.batch,
            "measurements_per_job": len(results[0].measurements),
            **measure(db, results, args),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
