"""``accel bench`` end to end: a real fork-server child builds and measures a tiny model; the CLI stays torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = """
[bench]
warmup = 1
min_iters = 3
min_duration_s = 0.0
max_duration_s = 2.0
"""

# Runs the real console entry point in a fresh interpreter and reports whether torch got imported there.
PROBE = """
import sys
from scheduler.cli import main
rc = main(sys.argv[1:])
sys.stderr.write(f"\\nTORCH_IMPORTED={'torch' in sys.modules}\\n")
sys.exit(rc)
"""


def accel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "accel.toml"
    config.write_text(QUICK)
    argv = [sys.executable, "-c", PROBE, "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One real ``accel bench bert --json`` run, shared by the tests that read its result."""
    return accel(tmp_path_factory.mktemp("bench"), "bench", "bert", "--batch", "1,2", "--seq", "8", "--threads", "1",
                 "--json")  # fmt: skip


def test_bench_json_reports_every_shape_from_a_child_without_torch_in_the_cli(bench_run):
    assert bench_run.returncode == 0, bench_run.stderr
    assert "TORCH_IMPORTED=False" in bench_run.stderr
    value = json.loads(bench_run.stdout)
    shapes = {(m["batch_size"], m["seq_len"]) for m in value["measurements"] if m["metric"] == "latency"}
    assert shapes == {(1, 8), (2, 8)}
    metrics = {m["metric"] for m in value["measurements"]}
    assert {"load_time", "first_call", "latency", "throughput", "peak_memory"} <= metrics
    latency = next(m for m in value["measurements"] if m["metric"] == "latency")
    assert latency["n"] >= 3 and len(latency["samples"]) == latency["n"] and latency["p50"] > 0
    assert value["environment"]["torch_threads"] == 1  # --threads reached the child
    assert value["environment"]["visible_devices"] == {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}
    assert value["model_type"] == "bert" and value["hardware"] == "cpu"


def test_bench_measures_a_model_without_a_sequence_axis_once_and_notes_the_other_seq(tmp_path: Path):
    from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE

    # When ViT (pixels: no sequence axis) is benchmarked at two sequence lengths
    done = accel(tmp_path, "bench", "vit", "--seq", "8,32", "--threads", "1", "--json")
    # Then it is measured at the first only, and a note says why the second is not measured again
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)
    assert [(m["batch_size"], m["seq_len"]) for m in value["measurements"] if m["metric"] == "latency"] == [(1, 8)]
    assert [n for n in value["notes"] if n.startswith(SEQ_NOT_APPLICABLE)] == [
        f"{SEQ_NOT_APPLICABLE} ViTModel: batch 1 x seq 32 is the input of seq 8 (no sequence axis), measured once"
    ]


def test_the_table_shows_each_shape_and_the_one_off_timings(bench_run, capsys):
    from accelerate_core import wire
    from accelerate_core.contracts import BenchReport
    from scheduler.cli.bench import print_table

    print_table(wire.decode(BenchReport, json.loads(bench_run.stdout)))

    text = capsys.readouterr().out
    assert "p50 ms" in text and "tiny bert (BertModel, float32) on cpu" in text and "first call" in text
    assert sum(1 for line in text.splitlines() if line.startswith("│")) == 2  # batch 1 and 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bench", "no_such_model_type"), "unknown model type 'no_such_model_type'"),
        (("bench", "bert", "--hardware", "mps" if sys.platform != "darwin" else "rocm"), "device"),
        (("bench", "bert", "--batch", "0,x"), "--batch '0,x' is invalid"),
        (("bench", "bert", "--size", "huge"), "--size: model size 'huge' is unknown: use one of tiny, full"),
        (("bench", "bert", "--dtype", "int3"), "dtype 'int3' is not supported"),
        (("bench", "bert", "--attn", "magic"), "--attn: attention 'magic' is unknown"),
        (("bench", "bert", "--size", "full", "--image-size", "64"), "--image-size applies to tiny model types only"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str):
    result = accel(tmp_path, *args)

    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("TORCH_IMPORTED")]
    assert len(lines) == 1 and lines[0].startswith("accel: error:") and message in lines[0], result.stderr
    assert result.stdout == ""


@pytest.fixture(scope="module")
def full_and_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """``accel bench bert --json`` at full size and tiny, same shape and loop."""
    runs = []
    for size in ("full", "tiny"):
        result = accel(tmp_path_factory.mktemp(size), "bench", "bert", "--size", size, "--seq", "16", "--json")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    return runs[0], runs[1]


def _p50(report: dict) -> float:
    return next(m["p50"] for m in report["measurements"] if m["metric"] == "latency")


def test_full_size_bert_is_bert_base_with_random_weights_and_slower_than_tiny(full_and_tiny):
    full, tiny = full_and_tiny

    assert full["size"] == "full" and tiny["size"] == "tiny"
    assert 105_000_000 < full["param_count"] < 115_000_000  # BERT-base: 109.5M
    assert tiny["param_count"] < 1_000_000
    assert _p50(full) > _p50(tiny)
    assert any("built on the meta device" in note and "no download" in note for note in full["notes"])
