"""Fleet overhead: 5,000 ``dry`` jobs end to end (enqueue -> row in DuckDB) vs bare Celery no-ops.

Both legs run on one redis-server started here on a free loopback port, in the same run:

- **bare**: a default Celery app (JSON, a Redis result backend, prefork ``-c 2``, no events) runs
  N no-op tasks; the client sends them all and waits for every result. That is Celery's own round
  trip with nothing of ours in it.
- **fleet**: the real writer plus one pinned CPU worker node with two pool processes, like the bare
  leg (``python -m workers``, the settings of production: acks late, prefetch 1, task events on,
  sent events from the scheduler, our redelivery counting); the scheduler's ``dispatch`` records a
  run of N ``dry`` jobs through the writer and sends them by name; the clock stops when the writer's
  status snapshot says every row is terminal in DuckDB. Each job is two messages (the job, then its
  result to the writer) where the bare leg's is one.

Prints JSON: both rates (jobs/s), their ratio (aim: >= 0.8, issue #17), the CPU seconds of each leg's
processes (sender, worker node with its pool, writer, redis-server) and ``cpu_ratio`` (bare CPU / fleet CPU:
what the rate ratio tends to where the legs are CPU-bound; steadier than the rates on a shared machine), and
the timings, with the fleet leg's stages read back from its DuckDB rows (wall clock, from the dispatch's start):

- ``send``: ``dispatch`` returning (every job on its queue);
- ``run``: the last job finished at a worker (``max(finished_at)``);
- ``drain``: the writer's lag behind that last result (``max(updated_at) - max(finished_at)``);
- ``status``: the rest, until the status snapshot said the run is done.

Usage: ``.venv/bin/python benchmarks/bench_fleet.py [--jobs 5000]``
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis as redis_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accelerate_core.config import Settings  # noqa: E402
from accelerate_core.constants import WRITER_LOCK_KEY  # noqa: E402
from accelerate_core.contracts import JobSpec, RunParams, RunPlan, job_key  # noqa: E402
from scheduler.remote import dispatch, live_nodes, read_status  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

NOOP_APP = """
from celery import Celery
app = Celery("bare", broker="{url}", backend="{url}")
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True)

@app.task(name="noop")
def noop():
    return None
"""


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


class CpuMeter:
    """CPU seconds each named process tree spends between :meth:`start` and :meth:`stop`: where a leg's work
    goes on a machine too busy for wall-clock stages to mean much. ``client`` is this process (the sender)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {"client": time.process_time()} | {name: _tree_cpu(pid) for name, pid in self.pids.items()}

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, float]:
        return {name: round(t - self.before[name], 3) for name, t in self._now().items()}


def bare_rate(url: str, n: int, work: Path, redis_pid: int) -> dict[str, Any]:
    """Celery's own no-op round trip: N tasks sent, N results awaited, on a default app."""
    (work / "bare_app.py").write_text(NOOP_APP.format(url=url))
    env = dict(os.environ, PYTHONPATH=str(work))
    cmd = [sys.executable, "-m", "celery", "-A", "bare_app", "worker", "-c", "2", "-P", "prefork"]
    worker = _start([*cmd, "--loglevel", "WARNING", "--without-gossip", "--without-mingle"], env, work / "bare.log")
    sys.path.insert(0, str(work))
    try:
        import bare_app  # type: ignore[import-not-found]

        bare_app.app.control.ping(timeout=10)  # wait for the worker
        _wait_for(lambda: bool(bare_app.app.control.ping(timeout=0.5)), 60, "the bare worker")
        cpu = CpuMeter({"worker": worker.pid, "redis": redis_pid})
        cpu.start()
        t0 = time.perf_counter()
        results = [bare_app.noop.delay() for _ in range(n)]
        sent = time.perf_counter() - t0
        for r in results:
            r.get(timeout=120)
        total = time.perf_counter() - t0
        cpu_s = cpu.stop()
    finally:
        _stop([worker])
    return {"rate": n / total, "seconds": total, "send_seconds": sent, "cpu_seconds": cpu_s}


def _wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit(f"bench_fleet: {what} did not start within {timeout_s:.0f} s")


def dry_plan(n: int) -> RunPlan:
    run_id = f"bench-fleet-{int(time.time())}"
    jobs = tuple(
        JobSpec(
            key=job_key(run_id, f"dry{i:05d}", "cpu", "dry"),
            run_id=run_id,
            model_type=f"dry{i:05d}",
            hardware="cpu",
            kind="dry",
        )
        for i in range(n)
    )
    params = RunParams(kind="dry", n_jobs=n)
    return RunPlan(run_id=run_id, phase="bench-fleet", created_at=time.time(), params=params, jobs=jobs)


def fleet_stages(db: Path, run_id: str, wall0: float, sent: float, total: float) -> dict[str, float]:
    """Where the fleet leg's time went, from its rows: ``send``, ``run``, ``drain``, ``status`` (module docstring)."""
    from accelerate_core.store import ResultsStore

    with ResultsStore.open(db, read_only=True) as store:
        (first, last, written), *_ = store.query(
            "SELECT min(started_at), max(finished_at), max(updated_at) FROM jobs WHERE run_id = ?", [run_id]
        )
    run = float(last) - wall0
    drain = float(written) - float(last)
    return {
        "send": round(sent, 3),
        "first_job_started": round(float(first) - wall0, 3),
        "run": round(run, 3),
        "drain": round(drain, 3),
        "status": round(total - run - drain, 3),
    }


def fleet_rate(url: str, n: int, work: Path, redis_pid: int) -> dict[str, Any]:
    """The fleet's dry jobs: writer + one CPU node (2 pool processes), enqueue to terminal row in DuckDB."""
    env = dict(
        os.environ,
        ACCEL_BROKER_URL=url,
        ACCEL_RESULTS_DB=str(work / "results.duckdb"),
        ACCEL_REPORTS_DIR=str(work / "reports"),
        ACCEL_FLEET_KEY=secrets.token_hex(32),  # the scheduler signs each job, the worker checks it
    )
    env.pop("ACCEL_CONFIG", None)
    settings = Settings.load(environ=env)
    py = [sys.executable, "-m", "workers"]
    procs = [_start([*py, "writer", "--loglevel", "WARNING"], env, work / "writer.log")]
    # One node with two pool processes, as the bare leg: the same processes doing the same work.
    cmd = [*py, "worker", "--hardware", "cpu", "--concurrency", "2", "--loglevel", "WARNING"]
    procs.append(_start(cmd, env, work / "cpu0.log"))
    try:
        writer_up = redis_lib.Redis.from_url(url)
        up = lambda: len(live_nodes(settings, 0.5)) >= 1 and writer_up.exists(WRITER_LOCK_KEY)  # noqa: E731
        _wait_for(up, 90, "writer and workers")
        plan = dry_plan(n)
        cpu = CpuMeter({"worker": procs[1].pid, "writer": procs[0].pid, "redis": redis_pid})
        cpu.start()
        wall0 = time.time()
        t0 = time.perf_counter()
        dispatch(settings, plan)
        sent = time.perf_counter() - t0
        _wait_for(lambda: (s := read_status(settings, plan.run_id)) is not None and s.phase_done, 600, "the run")
        total = time.perf_counter() - t0
        cpu_s = cpu.stop()
        status = read_status(settings, plan.run_id)
    finally:
        _stop(procs)
    done = status.by_status.get("done") if status is not None else None
    if done != n:
        raise SystemExit(f"bench_fleet: expected {n} done rows, the store says {status}")
    stages = fleet_stages(work / "results.duckdb", plan.run_id, wall0, sent, total)
    return {"rate": n / total, "seconds": total, "send_seconds": sent, "stages": stages, "cpu_seconds": cpu_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1, help="bare/fleet pairs; the median ratio is reported")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    redis = RedisServer(work / "redis")
    redis.start()
    assert redis.proc is not None
    redis_pid = redis.proc.pid
    rounds = []
    try:
        for _ in range(args.rounds):
            # Paired legs, back to back: on a shared machine only a ratio measured together means anything.
            bare = bare_rate(redis.url, args.jobs, work, redis_pid)
            redis.flushall()
            fleet = fleet_rate(redis.url, args.jobs, work, redis_pid)
            redis.flushall()
            cpu = sum(bare["cpu_seconds"].values()) / sum(fleet["cpu_seconds"].values())
            rounds.append({"fleet": fleet, "bare": bare, "ratio": fleet["rate"] / bare["rate"], "cpu_ratio": cpu})
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    out = {
        "benchmark": "fleet_dry_jobs_end_to_end",
        "jobs": args.jobs,
        "fleet_jobs_per_s": round(median["fleet"]["rate"], 1),
        "bare_celery_noop_per_s": round(median["bare"]["rate"], 1),
        "ratio": round(median["ratio"], 3),
        "aim_ratio": 0.8,
        "ratios_per_round": [round(r["ratio"], 3) for r in rounds],
        "cpu_ratio": round(median["cpu_ratio"], 3),
        "cpu_ratios_per_round": [round(r["cpu_ratio"], 3) for r in rounds],
        "fleet_seconds": round(median["fleet"]["seconds"], 2),
        "fleet_send_seconds": round(median["fleet"]["send_seconds"], 2),
        "fleet_stages_seconds": median["fleet"]["stages"],
        "bare_seconds": round(median["bare"]["seconds"], 2),
        "bare_send_seconds": round(median["bare"]["send_seconds"], 2),
        "fleet_cpu_seconds": median["fleet"]["cpu_seconds"],
        "bare_cpu_seconds": median["bare"]["cpu_seconds"],
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
