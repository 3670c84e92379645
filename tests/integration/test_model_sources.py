"""``accel run`` over every kind of model source, in two dtypes: a model type, a checkpoint directory, a hub id
in the local Hugging Face cache, and a hub id that is not there.

The checkpoints are real: tiny models written by ``save_pretrained`` (safetensors), one into a plain directory,
one into a Hugging Face cache laid out as huggingface_hub lays it out (``models--org--name/snapshots/<sha>/`` and
``refs/main``), which huggingface_hub's own ``scan_cache_dir`` reads back. The run is a real ``accel run``
process, offline (``HF_HUB_OFFLINE=1``) on the embedded default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import ERR_NOT_IN_CACHE, STATUS_DONE, STATUS_SKIPPED
from accelerate_core.contracts import JobSpec
from accelerate_core.store import ResultsStore
from scheduler.planning_inputs import template_lookup
from tests.support.checkpoints import SHA, cache_tiny, save_tiny
from tests.support.cli import seed_catalog_index

REPO = Path(__file__).resolve().parents[2]
QUICK = """
[bench]
warmup = 1
min_iters = 3
min_duration_s = 0.0
max_duration_s = 1.0
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint directory (tiny bert) and an HF cache holding ``acme/tiny-gpt2`` (tiny gpt2) at SHA."""
    from huggingface_hub import scan_cache_dir

    root = tmp_path_factory.mktemp("sources")
    checkpoint = save_tiny("bert", root / "my-bert")
    cache = root / "hub"
    cache_tiny(cache, "acme/tiny-gpt2", "gpt2")
    seen = {r.repo_id: {rev.commit_hash for rev in r.revisions} for r in scan_cache_dir(cache).repos}
    assert seen == {"acme/tiny-gpt2": {SHA}}  # huggingface_hub itself reads this cache
    return {"checkpoint": checkpoint, "cache": cache, "root": root}


@pytest.fixture(scope="module")
def run(sources: dict[str, Path]) -> tuple[subprocess.CompletedProcess[str], Settings]:
    """One ``accel run`` over a type, a directory, a cached hub id and an uncached one, in float32 and bfloat16."""
    root = sources["root"]
    seed_catalog_index(root)  # the run resolves model types through the catalog index: build it once per checkout
    settings = Settings(results_db=root / "results.duckdb", templates_db=root / "templates.duckdb",
                        reports_dir=root / "reports")  # fmt: skip
    template_lookup(settings)
    (root / "accel.toml").write_text(QUICK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCEL_", "HF_"))}
    env.update(ACCEL_RESULTS_DB=str(settings.results_db), ACCEL_TEMPLATES_DB=str(settings.templates_db),
               ACCEL_REPORTS_DIR=str(settings.reports_dir), ACCEL_CONCURRENCY="2",
               HF_HUB_CACHE=str(sources["cache"]), HF_HUB_OFFLINE="1")  # fmt: skip
    models = f"bert,{sources['checkpoint']},acme/tiny-gpt2,acme/not-cached"
    argv = [sys.executable, "-m", "scheduler", "--config", str(root / "accel.toml"), "run", "--phase", "sources",
            "--models", models, "--dtype", "float32,bfloat16", "--hardware", "cpu", "--json"]  # fmt: skip
    return subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=600), settings


def _jobs(settings: Settings, run_id: str) -> dict[str, tuple[JobSpec, str, str | None, str | None, str | None]]:
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        rows = store.query(
            "SELECT spec, status, error_class, error_message, generated_source FROM jobs WHERE run_id = ?", [run_id]
        )
    return {
        spec.model_type: (spec, status, error_class, message, source)
        for raw, status, error_class, message, source in rows
        for spec in [wire.decode(JobSpec, json.loads(raw))]
    }


def test_every_source_and_dtype_has_its_row(run, sources) -> None:
    result, settings = run
    assert result.returncode == 0, result.stderr
    jobs = _jobs(settings, json.loads(result.stdout)["run_id"])

    assert set(jobs) == {
        "bert", "bert.bfloat16", "my-bert", "my-bert.bfloat16", "acme--tiny-gpt2", "acme--tiny-gpt2.bfloat16",
        "acme--not-cached", "acme--not-cached.bfloat16",
    }  # fmt: skip
    for name, (spec, status, error_class, message, source) in jobs.items():
        assert spec.dtype == ("bfloat16" if name.endswith(".bfloat16") else "float32")
        if name.startswith("acme--not-cached"):
            assert status == STATUS_SKIPPED and error_class == ERR_NOT_IN_CACHE
            assert message is not None and "hf download acme/not-cached" in message
            continue
        assert status == STATUS_DONE, (name, error_class, message)
        assert source is not None and f"DTYPE = {spec.dtype!r}" in source  # the generated test builds that dtype
    kind = jobs["bert.bfloat16"][0].source
    assert kind is not None and (kind.kind, kind.ref, kind.model_type) == ("type", "bert", "bert")
    directory = jobs["my-bert"][0].source
    assert directory is not None and directory.kind == "dir" and directory.model_type == "bert"
    assert directory.path == str(sources["checkpoint"].resolve()) and directory.revision
    hub = jobs["acme--tiny-gpt2.bfloat16"][0].source
    assert hub is not None and hub.kind == "hub" and hub.ref == "acme/tiny-gpt2" and hub.revision == SHA
    assert hub.model_type == "gpt2" and hub.path is not None and hub.path.endswith(SHA)


def test_the_report_rows_name_source_and_dtype(run) -> None:
    result, settings = run
    run_id = json.loads(result.stdout)["run_id"]
    report = json.loads((settings.reports_dir / run_id / "report.json").read_text())
    rows = {r["model_type"]: r for r in report["rows"]}

    assert rows["acme--tiny-gpt2.bfloat16"]["source"] == f"hub:acme/tiny-gpt2@{SHA[:12]}"
    assert rows["acme--tiny-gpt2.bfloat16"]["dtype"] == "bfloat16"
    assert rows["my-bert"]["source"].startswith("dir:") and rows["my-bert"]["dtype"] == "float32"
    assert rows["bert"]["source"] == "type:bert"


def _accel_bench(sources: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    root = sources["root"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCEL_", "HF_"))}
    env.update(HF_HUB_CACHE=str(sources["cache"]), HF_HUB_OFFLINE="1")
    argv = [sys.executable, "-m", "scheduler", "--config", str(root / "accel.toml"), "bench", *args]
    return subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=300)


def test_bench_takes_a_cached_hub_id_and_names_the_fetch_of_one_not_cached(run, sources) -> None:
    # Given the cache of the run (run made accel.toml); When accel bench names a cached hub id in bfloat16
    found = _accel_bench(sources, "acme/tiny-gpt2", "--dtype", "bfloat16", "--seq", "8", "--json")
    # Then the checkpoint's weights are measured in that dtype and the report names the source and revision
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert report["source"] == f"hub:acme/tiny-gpt2@{SHA[:12]}" and report["dtype"] == "bfloat16"
    assert report["model_type"] == "gpt2" and report["model_class"] == "GPT2LMHeadModel"
    # And a hub id not in the cache is one line naming the command that fetches it, exit 2
    missing = _accel_bench(sources, "acme/not-cached")
    assert missing.returncode == 2 and missing.stdout == ""
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "`hf download acme/not-cached`" in lines[0], missing.stderr
