"""Fast, thread-safe import: each case in a fresh interpreter (a module imported once is cached)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from accelerate_core.selfbench import HEAVY_MODULES, measure_parallel

SUBMODULES = ("accelerate_core.config", "accelerate_core.backends", "accelerate_core.dispatch")

_THREADED_IMPORT = """
import importlib, json, sys, threading
order = {order!r}
barrier = threading.Barrier(8)
errors = []
def work(shift):
    barrier.wait()
    try:
        for name in order[shift % len(order):] + order[:shift % len(order)]:
            importlib.import_module(name)
        pkg = importlib.import_module("accelerate_core")
        assert pkg.Settings is sys.modules["accelerate_core.config"].Settings
        assert pkg.detect is sys.modules["accelerate_core.backends"].detect
        assert pkg.load_checkpoint_and_dispatch is sys.modules["accelerate_core.dispatch"].load_checkpoint_and_dispatch
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({{"errors": errors, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _run(code: str) -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("order", list(itertools.permutations(SUBMODULES)), ids="-".join)
def test_submodules_import_in_any_order_from_many_threads(order: tuple[str, ...]) -> None:
    # Given a fresh interpreter; When 8 threads import the submodules at once, each starting at a
    # different point of this order; Then none fails, the lazy names agree, and nothing heavy is loaded
    result = _run(_THREADED_IMPORT.format(order=list(order), heavy=HEAVY_MODULES))
    assert result == {"errors": [], "heavy": []}


def test_import_accelerate_core_loads_only_itself() -> None:
    code = (
        "import sys\nbefore = set(sys.modules)\nimport accelerate_core\nnew = sorted(set(sys.modules) - before)\n"
        "import json\nprint(json.dumps({'errors': [], 'heavy': new}))"
    )
    new_modules = _run(code)["heavy"]
    assert set(new_modules) <= {"accelerate_core", "__future__", "_thread"}, new_modules


def test_sixteen_threads_fifty_iterations_all_succeed() -> None:
    # The selfbench scenario, as a test: 16 threads x 50 iterations in a fresh interpreter
    result = measure_parallel(16, 50, rounds=1)
    assert result["attempts"] == 800
    assert result["success_rate"] == 1.0, result["errors"]
    assert result["heavy"] == []
