"""``accel selfbench``: how fast and how thread-safe ``accelerate_core`` itself loads, measured honestly.

Every load time is taken in a **fresh interpreter** (a module imported once is cached, so timing a
second import in one process measures a dict lookup): each module is imported ``repeats`` times, one
child process each, interleaved with a bare interpreter so that drift in the machine's load hits
both alike. Two figures per module: the import's own time (``perf_counter`` around the ``import``
inside the child) and the child's wall time over the bare interpreter's. Children run with bytecode caching on
(``PYTHONDONTWRITEBYTECODE`` removed; a discarded warm-up writes the ``.pyc`` files), as an installed
package runs: with it off, every import recompiles its source and ``import accelerate_core`` costs
about 1.2 ms instead of about 0.15 ms.

Basic operations (lazy attribute access of the public names) are timed warm in this process over
many iterations, and cold (the first access, which imports the submodule) in fresh interpreters.
Parallel loading starts N threads behind a barrier in a fresh interpreter, each importing the
modules in its own order and checking the public names, I times; rounds repeat it in new processes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

logger = logging.getLogger(__name__)

MODULES: tuple[str, ...] = (
    "accelerate_core",
    "accelerate_core.errors",
    "accelerate_core.constants",
    "accelerate_core.config",
    "accelerate_core.contracts",
    "accelerate_core.backends",
    "accelerate_core.dispatch",
)
"""Modules whose load time is measured, the package first."""

PARALLEL_MODULES: tuple[str, ...] = (
    "accelerate_core",
    "accelerate_core.config",
    "accelerate_core.backends",
    "accelerate_core.dispatch",
)
"""Modules the parallel-loading threads import, each thread in a different order."""

HEAVY_MODULES: tuple[str, ...] = ("torch", "transformers", "duckdb", "celery", "jinja2")
"""Modules that importing the core must never pull in."""

OPERATIONS: dict[str, str] = {
    "Config class access": "Settings",
    "Backends class access": "Backend",
    "dispatch function access": "load_checkpoint_and_dispatch",
}
"""Basic operations: a name of the package, accessed lazily (as the original benchmark did)."""

ORIGINAL_IMPORT_MS = 3.90
"""The original package's reported import time of ``accelerate_core``."""

TARGET_IMPORT_MS = 2.0
"""Our target for the import cost of ``accelerate_core`` over a bare interpreter."""

_IMPORT_CHILD = (
    "import time\nt0 = time.perf_counter()\n{stmt}\nt1 = time.perf_counter()\n"
    "import sys, json\nprint(json.dumps({{'s': t1 - t0, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))\n"
)

_PARALLEL_CHILD = """
import importlib, json, sys, threading, time
mods, threads, iters = {mods!r}, {threads}, {iters}
names = {names!r}
barrier = threading.Barrier(threads)
lock = threading.Lock()
counts = {{"ok": 0, "failed": 0}}
errors = []
def work(tid):
    barrier.wait()
    for it in range(iters):
        k = (tid + it) % len(mods)
        order = mods[k:] + mods[:k]
        try:
            for m in order:
                importlib.import_module(m)
            pkg = sys.modules["accelerate_core"]
            for name, src in names.items():
                if getattr(pkg, name) is not getattr(sys.modules[src], name):
                    raise AssertionError(name + " differs from " + src + "." + name)
            if pkg.Settings().redelivery_cap < 1:
                raise AssertionError("Settings() is wrong")
            ok = True
        except Exception as e:
            ok = False
            with lock:
                errors.append(type(e).__name__ + ": " + str(e))
        with lock:
            counts["ok" if ok else "failed"] += 1
t0 = time.perf_counter()
ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
counts["seconds"] = time.perf_counter() - t0
counts["errors"] = errors[:5]
counts["heavy"] = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps(counts))
"""

_NAME_SOURCES = {
    "Settings": "accelerate_core.config",
    "Backend": "accelerate_core.backends",
    "load_checkpoint_and_dispatch": "accelerate_core.dispatch",
    "detect": "accelerate_core.backends",
}


@dataclass(frozen=True, slots=True)
class SelfbenchConfig:
    """How much to measure. The defaults finish in well under a minute on 2 cores.

    Attributes:
        repeats: fresh interpreters per module (and for the bare interpreter).
        cold_repeats: fresh interpreters per basic operation's first access.
        op_iterations: warm iterations per timing of a basic operation.
        parallel: ``(threads, iterations)`` scenarios.
        parallel_rounds: fresh interpreters per parallel scenario.
        python: the interpreter to measure.
    """

    repeats: int = 15
    cold_repeats: int = 5
    op_iterations: int = 100_000
    parallel: tuple[tuple[int, int], ...] = ((5, 3), (16, 50))
    parallel_rounds: int = 3
    python: str = field(default_factory=lambda: sys.executable)

    @classmethod
    def quick(cls) -> SelfbenchConfig:
        """A smaller run for tests and smoke checks (a few seconds)."""
        return cls(repeats=3, cold_repeats=2, op_iterations=5_000, parallel_rounds=1)


def millisecond_stats(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread of samples in seconds, reported in milliseconds."""
    ms = sorted(s * 1000.0 for s in samples)
    if not ms:
        return {"n": 0}
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0], ms[0], ms[0]]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "p25_ms": q[0],
        "p75_ms": q[2],
    }


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)  # no profiling overhead; .pyc files written once, then read (as users see it)
    return env


def run_child(python: str, code: str, timeout: float = 120.0) -> tuple[dict[str, Any], float]:
    """Run ``code`` in a fresh interpreter; return its last stdout line as JSON and the wall seconds."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=timeout, env=_child_env(), check=False
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child interpreter failed ({done.returncode}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def measure_imports(modules: Sequence[str], repeats: int, python: str = sys.executable) -> dict[str, Any]:
    """Load time of each module in fresh interpreters, interleaved with a bare interpreter.

    Returns:
        ``{"bare": {...}, "modules": {name: {"import": stats, "wall": stats, "over_bare_ms": float,
        "over_bare_min_ms": float, "heavy": [...], "samples_s": [...]}}}`` with stats from :func:`millisecond_stats`.
    """
    stmts = {"(bare)": "pass", **{m: f"import {m}" for m in modules}}
    inside: dict[str, list[float]] = {k: [] for k in stmts}
    wall: dict[str, list[float]] = {k: [] for k in stmts}
    heavy: dict[str, set[str]] = {k: set() for k in stmts}
    for stmt in stmts.values():  # warm-up, discarded: writes missing .pyc files and warms the file cache
        run_child(python, _IMPORT_CHILD.format(stmt=stmt, heavy=HEAVY_MODULES))
    for _ in range(repeats):
        for key, stmt in stmts.items():
            out, seconds = run_child(python, _IMPORT_CHILD.format(stmt=stmt, heavy=HEAVY_MODULES))
            inside[key].append(float(out["s"]))
            wall[key].append(seconds)
            heavy[key].update(out["heavy"])
    bare_wall = millisecond_stats(wall["(bare)"])
    result: dict[str, Any] = {"bare": {"wall": bare_wall, "import": millisecond_stats(inside["(bare)"])}, "modules": {}}
    for m in modules:
        paired = [(a - b) * 1000.0 for a, b in zip(wall[m], wall["(bare)"], strict=True)]
        result["modules"][m] = {
            "import": millisecond_stats(inside[m]),
            "wall": millisecond_stats(wall[m]),
            # Each repeat runs the module right after the bare interpreter: the median of the paired
            # differences cancels slow drift in the machine's load; the minima show the quiet-machine cost.
            "over_bare_ms": statistics.median(paired),
            "over_bare_min_ms": (min(wall[m]) - min(wall["(bare)"])) * 1000.0,
            "heavy": sorted(heavy[m]),
            "samples_s": inside[m],
        }
    return result


def measure_operations(iterations: int, cold_repeats: int, python: str = sys.executable) -> dict[str, Any]:
    """Warm per-access time (this process, ``iterations`` accesses) and cold first access (fresh interpreters)."""
    import accelerate_core

    out: dict[str, Any] = {}
    for label, name in OPERATIONS.items():
        getattr(accelerate_core, name)  # the first access imports the submodule; time the steady state
        timer = timeit.Timer(f"pkg.{name}", globals={"pkg": accelerate_core})
        runs = [t / iterations for t in timer.repeat(repeat=5, number=iterations)]
        cold = [
            float(run_child(python, _IMPORT_CHILD.format(stmt=_cold_stmt(name), heavy=HEAVY_MODULES))[0]["s"])
            for _ in range(cold_repeats)
        ]
        out[label] = {
            "name": f"accelerate_core.{name}",
            "iterations": iterations,
            "warm_ns": statistics.median(runs) * 1e9,
            "warm_ops_per_s": 1.0 / statistics.median(runs),
            "cold": millisecond_stats(cold),
        }
    return out


def _cold_stmt(name: str) -> str:
    # The package import is not timed here: only the first access of the name, which loads its module.
    return f"pass\nimport accelerate_core as _p\nt0 = time.perf_counter()\n_p.{name}"


def measure_parallel(
    threads: int,
    iterations: int,
    rounds: int = 1,
    python: str = sys.executable,
    modules: Sequence[str] = PARALLEL_MODULES,
) -> dict[str, Any]:
    """Load ``modules`` from ``threads`` threads at once, ``iterations`` times each, in fresh interpreters.

    Each attempt imports every module (each thread in its own order), checks that the package's lazy
    names are the submodules' objects, and builds default Settings.

    Returns:
        attempts, successes, failures, success_rate (0-1), seconds per round, first errors, heavy modules seen.
    """
    code = _PARALLEL_CHILD.format(
        mods=list(modules), threads=threads, iters=iterations, names=_NAME_SOURCES, heavy=HEAVY_MODULES
    )
    ok = failed = 0
    seconds: list[float] = []
    errors: list[str] = []
    heavy: set[str] = set()
    for _ in range(rounds):
        out, _wall = run_child(python, code)
        ok, failed = ok + int(out["ok"]), failed + int(out["failed"])
        seconds.append(float(out["seconds"]))
        errors.extend(out["errors"])
        heavy.update(out["heavy"])
    attempts = ok + failed
    return {
        "threads": threads,
        "iterations": iterations,
        "rounds": rounds,
        "attempts": attempts,
        "successes": ok,
        "failures": failed,
        "success_rate": ok / attempts if attempts else 0.0,
        "seconds": millisecond_stats(seconds),
        "errors": errors[:5],
        "heavy": sorted(heavy),
    }


def system_information() -> dict[str, Any]:
    """The machine and versions the figures were measured on (no heavy import: versions from metadata)."""
    from accelerate_core import __version__
    from accelerate_core.backends import detect

    inventory = detect()
    cpu = inventory.of("cpu")[0] if inventory.of("cpu") else None
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "host": inventory.host,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "cpu": cpu.name if cpu else platform.processor(),
        "cores": cpu.cores if cpu else None,
        "threads": cpu.threads if cpu else os.cpu_count(),
        "memory_mb": cpu.total_memory_mb if cpu else None,
        "hardware": list(inventory.kinds()),
        "accelerate_core": __version__,
        "versions": {p: _version(p) for p in ("torch", "transformers", "duckdb", "celery", "jinja2")},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and whether each target was met."""
    pkg = results["module_loading"]["modules"]["accelerate_core"]
    import_ms = pkg["import"]["median_ms"]
    rates = {f"{p['threads']}x{p['iterations']}": p["success_rate"] for p in results["parallel_loading"]}
    heavy = sorted({h for m in results["module_loading"]["modules"].values() for h in m["heavy"]})
    checks = {
        "import_under_target": import_ms < TARGET_IMPORT_MS,
        "no_heavy_imports": not heavy,
        "parallel_all_succeeded": all(r == 1.0 for r in rates.values()),
    }
    return {
        "import_ms": import_ms,
        "import_over_bare_wall_ms": pkg["over_bare_ms"],
        "import_over_bare_min_wall_ms": pkg["over_bare_min_ms"],
        "original_import_ms": ORIGINAL_IMPORT_MS,
        "target_import_ms": TARGET_IMPORT_MS,
        "speedup_vs_original": ORIGINAL_IMPORT_MS / import_ms if import_ms > 0 else None,
        "parallel_success_rates": rates,
        "heavy_modules_imported": heavy,
        "checks": checks,
        "passed": all(checks.values()),
    }


def run_selfbench(
    config: SelfbenchConfig | None = None, on_step: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every measurement and return the JSON-able results (see :mod:`accelerate_core.selfbench_report`)."""
    cfg = config or SelfbenchConfig()
    step = on_step or (lambda _msg: None)
    t0 = time.perf_counter()
    step("system information")
    results: dict[str, Any] = {"system": system_information(), "config": _config_dict(cfg)}
    step(f"module loading ({len(MODULES)} modules x {cfg.repeats} fresh interpreters)")
    results["module_loading"] = measure_imports(MODULES, cfg.repeats, cfg.python)
    step("basic operations")
    results["basic_operations"] = measure_operations(cfg.op_iterations, cfg.cold_repeats, cfg.python)
    results["parallel_loading"] = []
    for threads, iterations in cfg.parallel:
        step(f"parallel loading ({threads} threads x {iterations} iterations x {cfg.parallel_rounds} rounds)")
        results["parallel_loading"].append(measure_parallel(threads, iterations, cfg.parallel_rounds, cfg.python))
    results["summary"] = summary(results)
    results["duration_s"] = time.perf_counter() - t0
    return results


def _config_dict(cfg: SelfbenchConfig) -> dict[str, Any]:
    return {
        "repeats": cfg.repeats,
        "cold_repeats": cfg.cold_repeats,
        "op_iterations": cfg.op_iterations,
        "parallel": [list(p) for p in cfg.parallel],
        "parallel_rounds": cfg.parallel_rounds,
    }


def timing_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for ``ResultsStore.record_import_timings``: one per module and per parallel scenario."""
    rows: list[dict[str, Any]] = []
    for name, m in results["module_loading"]["modules"].items():
        rows.append(
            {"section": "module-loading", "name": name, "samples": m["samples_s"], "over_bare_ms": m["over_bare_ms"]}
        )
    for label, op in results["basic_operations"].items():
        rows.append(
            {"section": "basic-operations", "name": label, "median_s": op["warm_ns"] / 1e9, "n": op["iterations"]}
        )
    for p in results["parallel_loading"]:
        rows.append(
            {
                "section": "parallel-loading",
                "name": f"{p['threads']}x{p['iterations']}",
                "median_s": p["seconds"]["median_ms"] / 1000.0,
                "n": p["rounds"],
                "success_rate": p["success_rate"],
            }
        )
    return rows
