"""A results DB with three runs of a few models (device and torch changes included), and a live service on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import duckdb

from accelerate_core.contracts import JobResult
from accelerate_core.service import ReadSource, ServiceConfig
from accelerate_core.service.server import ResultsService
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun

XSS = "<script>alert(1)</script>"
"""Markup that must reach every page escaped: in a model name, an error message and a device name."""
RICH = "[red]x"
"""Rich console markup that must reach every page as plain text."""
MODELS = ("bert", "gpt2", "vit", XSS)
"""The models in the store; the runs record ``llama`` in XSS's place, renamed in the file after (see build_store)."""
_RECORDED = ("bert", "gpt2", "vit", "llama")
MODALITIES = {"bert": "text", "gpt2": "text", "vit": "vision", "llama": "text"}
"""Recorded with each run (so no test depends on a catalog index lying around); XSS's is then unknown."""
XSS_DEVICE = f"{XSS} GPU"
"""The device name vit's cuda results carry (free text from a worker: never checked as a name)."""
HARDWARE = ("cpu", "cuda")
RUNS = ("q4-r1", "q4-r2", "q4-r3")


def _results(run: SyntheticRun, i: int) -> list[JobResult]:
    out = []
    for m in _RECORDED:
        for hw in HARDWARE:
            if m == "gpt2" and hw == "cuda":
                error = ("forward-error", "RuntimeError", f"{RICH} {XSS} failed")
                out.append(run.result(m, hw, status="failed", error=error))
                continue
            result = run.result(m, hw, latency=(0.02 if hw == "cpu" else 0.005) * (1 + 0.25 * i))
            env = {**result.environment, "torch": "2.12.0" if i < 2 else "2.13.0"}
            device = "Synthetic H100" if hw == "cuda" and i == 2 else result.device_name
            device = XSS_DEVICE if (m, hw) == ("vit", "cuda") else device
            out.append(replace(result, environment=env, device_name=device))
    return out


def build_store(path: Path, *, runs: tuple[str, ...] = RUNS, live_last: bool = False) -> Path:
    """Write ``runs`` (each a run of MODELS on HARDWARE, one minute apart) to a results DB at ``path``.

    In the third run the cuda device changes and torch moves from 2.12.0 to 2.13.0; gpt2 fails on cuda
    with a message holding markup. With ``live_last`` the last run stays ``running`` with jobs queued.

    Names are checked wherever they enter today, so a model named XSS can only be in a store written before
    that (or by hand): ``llama`` is renamed XSS with plain SQL, and the pages must still escape it.
    """
    with ResultsStore.open(path) as store:
        for i, run_id in enumerate(runs):
            run = SyntheticRun(run_id, phase="q4", models=_RECORDED, hardware=HARDWARE, shapes=((1, 16), (4, 16)),
                               created_at=1_760_000_000.0 + 60 * i, seed=i, modalities=MODALITIES)  # fmt: skip
            store.record_run(run.plan())
            results = _results(run, i)
            live = live_last and i == len(runs) - 1
            store.record_results(results[:3] if live else results)
            store.set_run_status(run_id, "running" if live else "complete")
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE jobs SET model_type = ? WHERE model_type = 'llama'", [XSS])
    return path


@contextmanager
def running_service(db: Path, config: ServiceConfig | None = None) -> Iterator[ResultsService]:
    """A results service over ``db`` (opened read-only) on a free loopback port, stopped on exit."""
    source = ReadSource.open(db)
    try:
        with ResultsService(source, config or ServiceConfig(port=0, reports_dir=db.parent / "reports")) as service:
            yield service
    finally:
        source.close()
