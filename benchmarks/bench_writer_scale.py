"""How large a fleet one results writer holds: the result traffic of N simulated workers, on loopback.

Everything is real except the jobs: its own ``redis-server`` on a free loopback port, the real writer
(``python -m workers writer``, production settings but for the reconciler, see below) writing a real DuckDB
file, and producer processes that send each result with the worker's own send function
(:func:`workers.tasks.send_result`, with the worker's settings): signed
``record_result`` messages to the ``results`` queue, so a change of the result transport changes this
benchmark with it. The results are SYNTHETIC (``accelerate_core.store.synthetic``: 3 shapes x 50 samples,
10 measurement rows each, like a real ``test`` job's; the shipped default template stands in for each job's
template and each result's generated test, so the messages have real sizes), each run recorded first through
``dispatch`` as ``accel run`` does.

Legs, in one run (the machine's load is reported with them; compare legs of one run only):

- **drain**: ``--drain`` results queued with no writer running, then the writer started: its uncontended
  capacity (results committed/s), and Redis's memory per queued result and per queued job.
- **paced**: for each N of ``--workers``, N simulated workers each finishing one job every ``--interval``
  seconds (random phases) for ``--duration`` seconds; the backlog (``results`` queue + the writer's claimed
  batch, as the writer's heartbeat counts it) is sampled, and the age of the oldest waiting result follows
  from it and the send times (first in, first out). A leg is *bounded* when the backlog's slope over the
  second half of the sending window is under 5 % of the rate sent; ``largest_bounded_workers`` counts only
  legs whose producers kept to their schedule (>= 90 % of the offered rate), else it measured the producers.
- **saturate**: ``--saturate`` results sent as fast as the producers can while the writer runs (contended).

The fleet one writer holds: ``writer_max_results_per_s`` (the best commit rate of any leg) ``x --job-s``
workers whose jobs take ``--job-s`` seconds each; ``largest_bounded_workers`` is the measured N (at
``--interval``), scaled the same way.
Every leg checks that the results committed equal the results sent (the writer's status snapshot, then the
DuckDB file itself once the writer stopped): ``lost`` must be 0.

The reconciler is set to pass every hour: the jobs of these runs are never run, so it would re-send them;
its cost is per pass over open runs, not per result.

Usage: ``python benchmarks/bench_writer_scale.py [--workers 1,8,32,128] [--interval 0.1] [--duration 10]``
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import multiprocessing as mp
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis as redis_lib  # noqa: E402

from accelerate_core import liveness  # noqa: E402
from accelerate_core.config import Settings  # noqa: E402
from accelerate_core.constants import STATUS_KEY_PREFIX, WRITER_LOCK_KEY, WRITER_PROCESSING_KEY  # noqa: E402
from accelerate_core.contracts import JobResult, RunPlan  # noqa: E402
from accelerate_core.store.synthetic import SyntheticRun  # noqa: E402
from tests.support import processes  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

SHAPES = ((1, 16), (4, 16), (8, 64))
SAMPLES = 50
SAMPLE_EVERY_S = 0.2
BOUNDED_SLOPE = 0.05
"""A paced leg is bounded when its backlog grows by less than this share of the offered rate."""
READY_S = 120.0
TEMPLATE_BODY = (ROOT / "templates_db" / "shipped" / "default.j2").read_text()
"""Stands in for a job's template and a result's generated test: real sizes, synthetic content."""


@dataclass
class Bench:
    """The broker, the settings every process gets, and the writer process."""

    work: Path
    redis: RedisServer
    env: dict[str, str]
    settings: Settings
    writer: Any = None
    client: redis_lib.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.client = redis_lib.Redis.from_url(self.redis.url, socket_timeout=30)

    def start_writer(self) -> None:
        log = self.work / "writer.log"
        cmd = [sys.executable, "-m", "workers", "writer", "--loglevel", "WARNING"]
        self.writer = processes.start(cmd, env=self.env, cwd=ROOT, log=log)
        _wait(lambda: self.client.exists(WRITER_LOCK_KEY) or self.writer.poll() is not None, READY_S, "the writer")
        if self.writer.poll() is not None:
            raise SystemExit(f"bench_writer_scale: the writer exited:\n{log.read_text()[-2000:]}")

    def stop_writer(self) -> None:
        if self.writer is not None:
            processes.stop(self.writer, timeout_s=60)
            self.writer = None

    def backlog(self) -> tuple[int, int]:
        """Messages waiting for the writer: the ``results`` queue and the batch it claimed (as its heartbeat's).

        Counted only: the heartbeat's reader (:func:`accelerate_core.liveness.results_backlog`) also decodes the
        oldest results for their age, which would take this process's share of the cores from the writer; the
        age comes from the send times instead.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.settings.results_queue)
        pipe.llen(WRITER_PROCESSING_KEY)
        waiting, claimed = pipe.execute()
        return int(waiting) + int(claimed), int(waiting)

    def queued_bytes(self) -> int:
        """Redis's memory for the ``results`` and ``hw.cpu`` lists (``MEMORY USAGE``, every element counted)."""
        queues = (self.settings.results_queue, self.settings.queue_for("cpu"))
        return sum(int(self.client.memory_usage(q, samples=0) or 0) for q in queues)

    def heartbeat(self) -> dict[str, Any]:
        beat = liveness.read_writer(self.client)
        return {"dead_letters": beat.dead_letters, "duplicates": beat.duplicates} if beat else {}


@contextlib.contextmanager
def bench_env(work: Path) -> Iterator[Bench]:
    """Redis on a free loopback port and the settings of a fleet around it; stopped and removed at the end."""
    redis = RedisServer(work / "redis", args=("--maxmemory", "4gb"))
    redis.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_BROKER_URL=redis.url,
        ACCEL_RESULTS_DB=str(work / "results.duckdb"),
        ACCEL_REPORTS_DIR=str(work / "reports"),
        ACCEL_TEMPLATES_DB=str(work / "templates.duckdb"),
        ACCEL_FLEET_KEY=secrets.token_hex(32),
        ACCEL_SERVE_PORT=str(free_port()),
        ACCEL_RECONCILE_EVERY_S="3600",
    )
    bench = Bench(work, redis, env, Settings.load(environ=env))
    try:
        yield bench
    finally:
        bench.stop_writer()
        redis.stop()


def _wait(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_writer_scale: {what} did not happen within {timeout_s:.0f} s")
        time.sleep(every_s)


# -- runs and their results ---------------------------------------------------------------------------------


def synthetic_run(name: str, n: int) -> SyntheticRun:
    run_id = f"scale-{name}-{secrets.token_hex(3)}"
    return SyntheticRun(run_id, phase="bench-writer-scale", models=[f"m{i:06d}" for i in range(n)],
                        shapes=SHAPES, samples=SAMPLES, created_at=time.time())  # fmt: skip


def record(bench: Bench, run: SyntheticRun) -> int:
    """Record ``run`` as ``accel run`` does (its jobs land on ``hw.cpu``, which nobody serves: dropped);
    return the bytes of Redis memory its queued messages took (the run's and its jobs')."""
    from scheduler.remote import dispatch

    before = bench.queued_bytes()
    dispatch(bench.settings, plan_of(run))
    taken = bench.queued_bytes() - before
    bench.client.delete(bench.settings.queue_for("cpu"))
    return taken


def plan_of(run: SyntheticRun) -> RunPlan:
    """``run``'s plan, each job carrying the shipped default template's body as a real job does."""
    plan = run.plan()
    jobs = tuple(replace(j, template=replace(j.template, body=TEMPLATE_BODY)) if j.template else j for j in plan.jobs)
    return replace(plan, jobs=jobs)


def results_of(run: SyntheticRun) -> list[JobResult]:
    """``run``'s results, each with a generated source the size of the shipped template, as a real one has."""
    made = (run.result(m, "cpu", latency=0.01, spread=0.05, duration=5.0) for m in run.models)
    return [replace(r, generated_source=TEMPLATE_BODY) for r in made]


def wait_recorded(bench: Bench, run: SyntheticRun) -> None:
    """Wait until the writer has recorded ``run`` (its first snapshot); a big run's one message takes a while."""
    recorded = lambda: bench.client.get(STATUS_KEY_PREFIX + run.run_id) is not None  # noqa: E731
    _wait(recorded, READY_S + len(run.models) / 50, f"run {run.run_id} ({len(run.models)} jobs) to be recorded")


def wait_committed(bench: Bench, plan: RunPlan, timeout_s: float) -> dict[str, int]:
    """Wait until the writer's snapshot says every job of ``plan`` is terminal and reported; its counts."""
    from scheduler.remote import read_status

    def done() -> bool:
        snap = read_status(bench.settings, plan.run_id)
        return snap is not None and snap.phase_done and snap.report_dir is not None

    _wait(done, timeout_s, f"run {plan.run_id} to be committed", every_s=0.2)
    snap = read_status(bench.settings, plan.run_id)
    return dict(snap.by_status) if snap else {}


# -- producers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """What one producer process sends: its simulated workers' results and when each is due."""

    results: list[JobResult]
    due: list[float]
    """Seconds after the start at which each result is sent (all 0: as fast as possible)."""


def shares(results: Sequence[JobResult], workers: int, procs: int, interval_s: float | None) -> list[Share]:
    """Spread ``results`` over ``workers`` simulated workers (one result each ``interval_s``, random phase;
    None: as fast as possible), and the workers over ``procs`` processes."""
    rng = random.Random(0)
    per = [list(results[w::workers]) for w in range(workers)]
    phase = [rng.uniform(0, interval_s or 0) for _ in range(workers)]
    out: list[Share] = []
    for p in range(min(procs, workers)):
        timed = [((phase[w] + j * (interval_s or 0)), r) for w in range(p, workers, procs)
                 for j, r in enumerate(per[w])]  # fmt: skip
        timed.sort(key=lambda t: t[0])
        out.append(Share([r for _, r in timed], [t for t, _ in timed]))
    return out


def produce(env: dict[str, str], share: Share, start: Any, out: Any) -> None:
    """One producer process: each result sent by the worker's send function when due."""
    from workers.tasks import send_result

    settings = Settings.load(environ=env)
    start.wait()
    t0 = time.time()
    sent: list[float] = []
    late = 0.0
    for due, result in zip(share.due, share.results, strict=True):
        now = time.time()
        if due > now - t0:
            time.sleep(due - (now - t0))
        late = max(late, time.time() - t0 - due)
        done = time.time()
        send_result(settings, replace(result, started_at=done - (result.duration_s or 0.0), finished_at=done))
        sent.append(time.time())
    out.put({"sent": sent, "late_max_s": late})


def run_producers(bench: Bench, leg: list[Share], sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start one process per share, release them together, and gather when each result was sent."""
    import workers.app
    import workers.tasks  # noqa: F401  (imported here, once: the forked producers start without importing)

    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(len(leg) + 1), ctx.Queue()
    procs = [ctx.Process(target=produce, args=(bench.env, s, start, out), daemon=True) for s in leg]
    for p in procs:
        p.start()
    start.wait(timeout=READY_S)
    t0 = time.time()
    stop = threading.Event()
    sampler = Sampler(bench, t0, stop)
    sampler.start()
    got = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join(30)
    sent = sorted(t for g in got for t in g["sent"])
    return {"t0": t0, "sent": sent, "late_max_s": max(g["late_max_s"] for g in got), "sampler": sampler,
            "stop": stop}  # fmt: skip


class Sampler(threading.Thread):
    """Samples (seconds since ``t0``, backlog) every :data:`SAMPLE_EVERY_S`, and (seconds, queued but not yet
    claimed by the writer) apart."""

    def __init__(self, bench: Bench, t0: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.bench, self.t0, self.stop = bench, t0, stop
        self.samples: list[tuple[float, int]] = []
        self.unclaimed: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            (backlog, unclaimed), t = self.bench.backlog(), time.time() - self.t0
            self.samples.append((t, backlog))
            self.unclaimed.append((t, unclaimed))
            self.stop.wait(SAMPLE_EVERY_S)


# -- legs --------------------------------------------------------------------------------------------------


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (0 for fewer than two)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def paced_leg(bench: Bench, workers: int, interval_s: float, duration_s: float, procs: int) -> dict[str, Any]:
    """N simulated workers, each finishing one job every ``interval_s`` for ``duration_s``, with the writer on."""
    each = max(1, round(duration_s / interval_s))
    run = synthetic_run(f"paced{workers}", workers * each)
    record(bench, run)
    wait_recorded(bench, run)
    got = run_producers(bench, shares(results_of(run), workers, procs, interval_s))
    counts = wait_committed(bench, run.plan(), READY_S + 10 * duration_s)
    got["stop"].set()
    sent = [t - got["t0"] for t in got["sent"]]
    samples, end = got["sampler"].samples, sent[-1]
    during = [(t, b) for t, b in samples if t <= end]
    half = [(t, float(b)) for t, b in during if t >= end / 2]
    growth, rate = slope(half), len(sent) / end
    offered = workers / interval_s
    return {
        "workers": workers,
        "interval_s": interval_s,
        "offered_per_s": round(offered, 1),
        "sent": len(sent),
        "committed": counts.get("done", 0),
        "sent_per_s": round(rate, 1),
        "producers_kept_up": rate >= 0.9 * offered,
        "committed_per_s": round(committed_rate(sent, half), 1),
        "backlog_slope_per_s": round(growth, 1),
        "backlog_max": max((b for _, b in during), default=0),
        "oldest_age_max_s": round(max((oldest_age(sent, t, b) for t, b in during), default=0.0), 2),
        "drain_after_send_s": round(first_empty(samples, end) - end, 2),  # the run's report included
        "bounded": growth < BOUNDED_SLOPE * rate,
        "run_id": run.run_id,
    }


def committed_rate(sent: Sequence[float], window: Sequence[tuple[float, float]]) -> float:
    """Results committed per second over ``window`` (samples of the backlog): sent so far less the backlog."""
    if len(window) < 2:
        return 0.0
    (t1, b1), (t2, b2) = window[0], window[-1]
    return ((bisect.bisect_right(sent, t2) - b2) - (bisect.bisect_right(sent, t1) - b1)) / (t2 - t1)


def oldest_age(sent: Sequence[float], t: float, backlog: int) -> float:
    """How long the oldest result waiting at ``t`` had been sent (the queue is first in, first out)."""
    n = bisect.bisect_right(sent, t)
    waiting = min(backlog, n)
    return t - sent[n - waiting] if waiting else 0.0


def first_empty(samples: Sequence[tuple[float, int]], after: float) -> float:
    """When the backlog was first empty after ``after`` seconds (the last sample's time if never)."""
    return next((t for t, b in samples if b == 0 and t >= after), samples[-1][0] if samples else after)


def drain_leg(bench: Bench, n: int, procs: int) -> dict[str, Any]:
    """``n`` results queued with no writer, then the writer started: its capacity, and Redis's memory per
    queued result and job."""
    run = synthetic_run("drain", n)
    job_bytes = record(bench, run)
    before = bench.queued_bytes()
    got = run_producers(bench, shares(results_of(run), procs, procs, None))
    got["stop"].set()
    queued = bench.queued_bytes() - before
    newest = bench.client.lindex(bench.settings.results_queue, 0)
    sending_s = got["sent"][-1] - got["t0"]
    stop = threading.Event()
    sampler = Sampler(bench, time.time(), stop)
    sampler.start()
    bench.start_writer()
    counts = wait_committed(bench, run.plan(), READY_S + n / 10)
    stop.set()
    sampler.join()
    seconds = drain_seconds(sampler)
    rate = n / seconds
    return {
        "results": n,
        "committed": counts.get("done", 0),
        "producer_send_per_s": round(n / sending_s, 1),
        "writer_results_per_s": round(rate, 1),
        "drain_s": round(seconds, 2),
        "result_message_bytes": len(newest or b""),
        "redis_bytes_per_queued_result": round(queued / n),
        "redis_bytes_per_queued_job": round(job_bytes / n),
        "run_id": run.run_id,
    }


def drain_seconds(sampler: Sampler) -> float:
    """Seconds from the writer's first claim (the queue shrinks) until the backlog is empty (one sample at least).

    From the claim, not from the first commit: a claimed batch stays in the backlog until it is committed.
    """
    full = max(u for _, u in sampler.unclaimed)
    claimed = next((t for t, u in sampler.unclaimed if u < full), sampler.unclaimed[-1][0])
    return max(first_empty(sampler.samples, claimed) - claimed, SAMPLE_EVERY_S)


def saturate_leg(bench: Bench, n: int, procs: int) -> dict[str, Any]:
    """``n`` results sent as fast as ``procs`` producers can, with the writer on (sharing the machine)."""
    run = synthetic_run("saturate", n)
    record(bench, run)
    wait_recorded(bench, run)
    got = run_producers(bench, shares(results_of(run), procs, procs, None))
    counts = wait_committed(bench, run.plan(), READY_S + n / 10)
    got["stop"].set()
    total_s = first_empty(got["sampler"].samples, got["sent"][-1] - got["t0"])
    return {
        "results": n,
        "committed": counts.get("done", 0),
        "producer_send_per_s": round(n / (got["sent"][-1] - got["t0"]), 1),
        "writer_results_per_s": round(n / total_s, 1),
        "backlog_max": max((b for _, b in got["sampler"].samples), default=0),
        "run_id": run.run_id,
    }


# -- the whole benchmark -----------------------------------------------------------------------------------


def committed_in_store(settings: Settings, run_ids: Sequence[str]) -> dict[str, int]:
    """Done rows per run in the DuckDB file (read-only: the writer must have stopped)."""
    from accelerate_core.store import ResultsStore

    with ResultsStore.open(settings.results_db, read_only=True) as store:
        rows = store.query("SELECT run_id, count(*) FROM jobs WHERE status = 'done' GROUP BY run_id", [])
    found = {str(r): int(n) for r, n in rows}
    return {r: found.get(r, 0) for r in run_ids}


def say(leg: dict[str, Any], name: str) -> dict[str, Any]:
    """Print one leg's figures on stderr as it ends (the JSON comes at the end, on stdout)."""
    print(f"bench_writer_scale: {name}: {json.dumps(leg)}", file=sys.stderr, flush=True)
    return leg


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    with bench_env(work) as bench:
        drain = say(drain_leg(bench, args.drain, args.procs), "drain")
        paced = [say(paced_leg(bench, n, args.interval, args.duration, args.procs), "paced") for n in args.workers]
        saturate = say(saturate_leg(bench, args.saturate, args.procs), "saturate") if args.saturate else None
        beat = bench.heartbeat()
        bench.stop_writer()
        legs = [drain, *paced, *([saturate] if saturate else [])]
        stored = committed_in_store(bench.settings, [leg["run_id"] for leg in legs])
    return summary(args, drain, paced, saturate, stored, beat) | {
        "load_avg_1m_start": round(load_start, 2),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }


def summary(
    args: argparse.Namespace,
    drain: dict[str, Any],
    paced: list[dict[str, Any]],
    saturate: dict[str, Any] | None,
    stored: dict[str, int],
    beat: dict[str, Any],
) -> dict[str, Any]:
    legs = [drain, *paced, *([saturate] if saturate else [])]
    sent = sum(leg.get("sent", leg.get("results", 0)) for leg in legs)
    in_store = sum(stored.values())
    # The best commit rate any leg saw: a paced leg's is its offered rate until the writer falls behind.
    rates = [drain["writer_results_per_s"], *(leg["committed_per_s"] for leg in paced)]
    best = max([*rates, *([saturate["writer_results_per_s"]] if saturate else [])])
    # A leg whose producers fell behind their schedule measured the producers (on this machine), not the writer.
    bounded = [leg["workers"] for leg in paced if leg["bounded"] and leg["producers_kept_up"]]
    largest = max(bounded, default=0)
    return {
        "benchmark": "writer_scale",
        "synthetic_results": True,
        "measurements_per_result": len(SHAPES) * 3 + 1,
        "drain": drain,
        "paced": paced,
        "saturate": saturate,
        "sent": sent,
        "committed_in_store": in_store,
        "lost": sent - in_store,
        "dead_letters": beat.get("dead_letters"),
        "duplicates": beat.get("duplicates"),
        "largest_bounded_workers": largest,
        "largest_bounded_offered_per_s": round(largest / args.interval, 1),
        "writer_max_results_per_s": best,
        "fleet_one_writer_holds": {
            "job_s": args.job_s,
            "workers": int(best * args.job_s),
            "measured_workers_scaled": int(largest * args.job_s / args.interval),
        },
        "cpu_count": os.cpu_count(),
    }


def _workers(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--workers wants positive integers separated by commas, not {text!r}")
    return out


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if value <= 0:
            raise argparse.ArgumentTypeError(f"wants a positive number, not {text!r}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=_workers, default=[1, 8, 32, 128], help="simulated workers per paced leg")
    parser.add_argument("--interval", type=_positive(float), default=0.1, help="seconds between a worker's results")
    parser.add_argument("--duration", type=_positive(float), default=10.0, help="seconds each paced leg sends")
    parser.add_argument("--drain", type=_positive(int), default=5000, help="results queued before the writer starts")
    parser.add_argument("--saturate", type=int, default=5000, help="results sent flat out with the writer on (0: skip)")
    parser.add_argument("--procs", type=_positive(int), default=4, help="producer processes (workers share them)")
    parser.add_argument("--job-s", type=_positive(float), default=10.0, help="a typical job's seconds, for sizing")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-writer-scale-"))
    try:
        out = run(args, work)
    except SystemExit:
        log = work / "writer.log"
        print(f"the writer's last lines:\n{log.read_text()[-3000:] if log.is_file() else '(none)'}", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    if out["lost"]:
        raise SystemExit(f"bench_writer_scale: {out['lost']} results sent were not committed")


if __name__ == "__main__":
    main()
