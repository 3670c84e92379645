"""`accel generate` end to end: real CLI, real catalog, generated files collected and run by a real pytest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from accelerate_core.catalog.index import load_index
from templates_db.validate import validate_source

REPO = Path(__file__).resolve().parents[2]

SAMPLE_30 = (
    # text: encoders, decoders (generative), encoder-decoders
    "bert", "roberta", "distilbert", "albert", "electra",
    "gpt2", "llama", "mistral", "qwen2",
    "bart", "t5", "marian",
    # vision
    "vit", "deit", "convnext", "resnet", "swin", "dinov2",
    # audio
    "wav2vec2", "hubert", "whisper", "speech_to_text",
    # multimodal (two-tower and image+text generative), video, time series
    "clip", "siglip", "llava", "paligemma", "videomae", "vivit", "patchtst", "patchtsmixer",
)  # fmt: skip
"""30 architectures across modalities whose generated tests must pass on CPU (the ``slow`` sweep)."""

SAMPLE_FAMILIES = (
    "bert", "llama", "t5",  # text: an encoder, a generative decoder, an encoder-decoder
    "vit", "wav2vec2", "whisper",  # vision; audio: CTC and sequence-to-sequence
    "clip", "llava", "videomae", "patchtst",  # multimodal two-tower and image+text generative, video, time series
)  # fmt: skip
"""One architecture of each kind in ``SAMPLE_30`` (every modality, every template family): the default run's."""

QUICK_BENCH = """
templates_db = "{db}"

[bench]
warmup = 1
min_iters = 2
min_duration_s = 0.0
max_duration_s = 1.0
new_tokens = 3
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A settings file: a fresh templates DB and a short benchmark loop (the shapes are the defaults)."""
    path = tmp_path / "accel.toml"
    path.write_text(QUICK_BENCH.format(db=tmp_path / "templates.duckdb"))
    return path


def _generate(config: Path, models: str, out: Path, hardware: str = "cpu") -> dict:
    # cwd = the repository, so the cached catalog index (accel-data/) is shared with the other tests
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(config), "generate", "--models", models,
         "--hardware", hardware, "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report: dict = json.loads(proc.stdout)
    assert report["counts"]["failed"] == 0, report["failed"]
    return report


def _pytest(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> ET.Element:
    """Run pytest in ONE subprocess on generated files; return the junit XML's testsuite."""
    junit = cwd / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    suite.set("output", proc.stdout[-4000:])
    return suite


def _expected_tests(folder: Path) -> int:
    return sum(len(validate_source(p.read_text(), filename=p.name)) for p in folder.glob("test_*.py"))


def _outcome(case: ET.Element) -> str:
    return next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")


def _outcomes(suite: ET.Element) -> Counter[str]:
    return Counter(_outcome(case) for case in suite.iter("testcase"))


@pytest.mark.slow
def test_generate_all_writes_a_collectable_file_for_every_runnable_architecture(config: Path, tmp_path: Path) -> None:
    # Given the catalog, when every architecture is generated
    out = tmp_path / "all"
    report = _generate(config, "all", out)
    entries = load_index()
    runnable = {e.model_type for e in entries if e.runnable}
    # Then there is one file per runnable architecture and every other one is listed with its reason
    assert {w["model_type"] for w in report["written"]} == runnable
    assert len(list(out.glob("test_*.py"))) == len(runnable)
    assert {s["model_type"] for s in report["skipped"]} == {e.model_type for e in entries if not e.runnable}
    assert all(s["reason_class"] and s["reason"] for s in report["skipped"])
    # And pytest collects all of them with zero errors (ONE subprocess, collection only)
    expected = _expected_tests(out)
    suite = _pytest("--collect-only", out, cwd=out)
    output = suite.get("output", "")
    assert int(suite.get("errors", "1")) == 0, output
    assert f"{expected} tests collected" in output, output[-2000:]


def test_generate_a_sample_collects_with_zero_errors(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample"
    models = "bert,gpt2,t5,vit,wav2vec2,whisper,llava,videomae,patchtst"
    report = _generate(config, models, out, hardware="cuda")
    assert report["counts"]["written"] == len(models.split(","))
    expected = _expected_tests(out)
    suite = _pytest("--collect-only", out, cwd=out)
    assert int(suite.get("errors", "1")) == 0 and f"{expected} tests collected" in suite.get("output", "")


def test_generated_tests_pass_on_cpu_and_write_measurements(config: Path, tmp_path: Path) -> None:
    # Given files for a few architectures on cpu, and one generated for cuda (no CUDA device here)
    cpu, cuda = tmp_path / "cpu", tmp_path / "cuda"
    _generate(config, "bert,vit,wav2vec2,gpt2", cpu)
    _generate(config, "electra", cuda, hardware="cuda")
    measurements = tmp_path / "measurements.json"
    # When pytest runs them standalone, gpt2 last (so the measurements file is gpt2's)
    files = [cpu / f"test_{t}.py" for t in ("bert", "vit", "wav2vec2", "gpt2")] + [cuda / "test_electra.py"]
    suite = _pytest(*files, cwd=tmp_path, env={"ACCEL_BENCH_OUT": str(measurements)})
    # Then every cpu test passes, and the cuda file is skipped with the reason (not failed)
    outcomes = _outcomes(suite)
    assert outcomes == Counter(passed=2 + 2 + 2 + 3, skipped=2), suite.get("output")
    skipped = [c for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert all("cuda" in c.get("classname", "") for c in skipped)
    assert all("no CUDA/ROCm device" in (c.find("skipped").get("message") or "") for c in skipped)  # type: ignore[union-attr]
    # And the benchmark test wrote its measurements through accelerate_core.bench
    from accelerate_core.bench import read_measurements

    written = read_measurements(measurements)
    metrics = {m.metric for m in written.measurements}
    assert {"load_time", "first_call", "latency", "throughput", "peak_memory", "tokens_per_s"} <= metrics
    assert all(m.n >= 1 for m in written.measurements) and written.environment


@pytest.mark.parametrize(
    "sample",
    [pytest.param(SAMPLE_FAMILIES, id="each-family"), pytest.param(SAMPLE_30, id="30", marks=pytest.mark.slow)],
)
def test_generated_tests_of_architectures_across_modalities_pass_on_cpu(
    config: Path, tmp_path: Path, sample: tuple[str, ...]
) -> None:
    # Given files for architectures across modalities (one of each kind; all 30 in the slow sweep)
    out = tmp_path / "sample"
    report = _generate(config, ",".join(sample), out)
    modalities = {e.modality for e in load_index() if e.model_type in sample}
    assert report["counts"]["written"] == len(sample) == len(set(sample)) and len(modalities) >= 6
    # When ONE pytest subprocess runs all of them
    suite = _pytest(out, cwd=out, timeout=600)
    outcomes = _outcomes(suite)
    # Then nothing fails; only a generate the catalog says is unsupported may be skipped
    assert outcomes["failure"] == 0 and outcomes["error"] == 0, suite.get("output")
    passed_forward = {
        c.get("classname")
        for c in suite.iter("testcase")
        if c.get("name") == "test_forward" and _outcome(c) == "passed"
    }
    assert len(passed_forward) == len(sample)
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert set(skipped) <= {"test_generate"}, skipped
