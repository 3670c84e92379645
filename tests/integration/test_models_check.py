"""``accel models check`` end to end, in a real subprocess, each type isolated in its own fork."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = ["bert", "gpt2", "vit", "wav2vec2", "clip", "timm_wrapper", "sam", "sam_prompt_encoder", "sam2_prompt_encoder"]


def _accel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "import sys; from scheduler.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def test_models_check_sample_writes_classified_outcomes(tmp_path: Path) -> None:
    # Given a sample with runnable types, one needing timm, a component with its parent and one without
    out = tmp_path / "check.json"
    # When the sample is checked
    proc = _accel(
        "models", "check", "--models", ",".join(SAMPLE), "--jobs", "2", "--out", str(out), "--json", cwd=Path.cwd()
    )
    # Then it exits 0, prints counts and writes one classified row per type
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["total"] == len(SAMPLE) and summary["passed"] == 7 and summary["passed_through_parent"] == 1
    assert summary["by_reason_class"] == {"missing-dependency": 1, "component": 1}
    rows = {r["model_type"]: r for r in json.loads(out.read_text())["outcomes"]}
    assert set(rows) == set(SAMPLE)
    assert rows["timm_wrapper"]["needs"] == ["timm"]
    assert rows["gpt2"]["generate"]["ok"] and rows["bert"]["output"]["shape"][0] == 1
    # And the component passes through its parent because its modules ran in the parent's forward pass
    assert "sam_prompt_encoder" in rows["sam"]["components_run"]
    component = rows["sam_prompt_encoder"]
    assert component["status"] == "pass" and component["reason_class"] == "component"
    assert component["tested_through"] == "sam" and "ran in sam's" in component["reason"]
    # While one whose parent is not in the run stays skipped, naming the parent to check
    assert rows["sam2_prompt_encoder"]["status"] == "skipped" and "check sam2" in rows["sam2_prompt_encoder"]["reason"]


def test_models_check_unknown_type_is_usage_error() -> None:
    proc = _accel("models", "check", "--models", "bert,nope_model", cwd=Path.cwd())
    assert proc.returncode == 2 and "nope_model" in proc.stderr and proc.stderr.count("\n") == 1


def test_models_list_and_show_json() -> None:
    listed = json.loads(_accel("models", "list", "--modality", "video", "--json", cwd=Path.cwd()).stdout)
    assert listed and all(e["modality"] == "video" for e in listed)
    shown = json.loads(_accel("models", "show", "bert", "--json", cwd=Path.cwd()).stdout)
    assert shown["model_class"] == "BertModel" and shown["config"]["hidden_size"] == 32


@pytest.mark.slow
def test_full_sweep_passes_at_least_780(tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    proc = _accel("models", "check", "--jobs", "2", "--out", str(out), "--json", cwd=Path.cwd())
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # 780 counts components whose modules ran in a passing parent's forward pass (29 on 5.24.0)
    assert summary["total"] >= 822 and summary["passed"] >= 780
    assert summary["passed"] - summary["passed_through_parent"] >= 750
    rows = {r["model_type"]: r for r in json.loads(out.read_text())["outcomes"]}
    assert all(r["status"] == "pass" or (r["reason_class"] and r["reason"]) for r in rows.values())
    for row in rows.values():  # every component pass is backed by its parent's pass and hooks
        if row["status"] == "pass" and row.get("tested_through"):
            parent = rows[row["tested_through"]]
            assert parent["status"] == "pass" and row["model_type"] in parent["components_run"]


def test_models_list_counts_parameters_tiny_and_full_and_caches_them(tmp_path: Path) -> None:
    from transformers import PatchTSTConfig, PatchTSTModel

    from accelerate_core import catalog
    from accelerate_core.param_counts import cache_file
    from tests.support.cli import seed_catalog_index

    # Given a fresh folder with the catalog index
    seed_catalog_index(tmp_path)
    # When the time-series types are listed at full size, then tiny
    full = {e["model_type"]: e for e in json.loads(_accel("models", "list", "--modality", "time-series", "--size",
                                                          "full", "--json", cwd=tmp_path).stdout)}  # fmt: skip
    tiny = {e["model_type"]: e for e in json.loads(_accel("models", "list", "--modality", "time-series", "--json",
                                                          cwd=tmp_path).stdout)}  # fmt: skip
    # Then each count is what the model built for real has (the default config; the catalog's tiny model)
    assert full["patchtst"]["size"] == "full" and tiny["patchtst"]["size"] == "tiny"
    assert full["patchtst"]["param_count"] == sum(p.numel() for p in PatchTSTModel(PatchTSTConfig()).parameters())
    assert tiny["patchtst"]["param_count"] == sum(p.numel() for p in catalog.instantiate("patchtst").parameters())
    assert all(tiny[t]["param_count"] < full[t]["param_count"] for t in full if full[t]["param_count"])
    # And the counts are cached: a listing reads them back without counting again
    cached = tmp_path / cache_file("full")
    data = json.loads(cached.read_text())
    data["counts"]["patchtst"] = 7
    cached.write_text(json.dumps(data))
    again = json.loads(
        _accel("models", "list", "--modality", "time-series", "--size", "full", "--json", cwd=tmp_path).stdout
    )
    assert {e["model_type"]: e["param_count"] for e in again}["patchtst"] == 7
    wrong = _accel("models", "list", "--size", "huge", cwd=tmp_path)
    assert wrong.returncode == 2 and "--size 'huge'" in wrong.stderr and wrong.stderr.count("\n") == 1


@pytest.mark.slow  # two counting subprocesses (torch + transformers imports each): 72 s at load 10 on 2 cores
def test_an_interrupted_count_keeps_what_it_counted_and_the_next_counts_the_rest(tmp_path: Path) -> None:
    from accelerate_core.param_counts import cache_file, load_param_counts

    types = ["patchtst", "patchtsmixer", "informer", "autoformer"]
    seen: list[tuple[int, int]] = []

    def interrupt_after_two(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            raise KeyboardInterrupt

    # Given a first listing interrupted (Ctrl-C) after two of four counts
    with pytest.raises(KeyboardInterrupt):
        load_param_counts(types, "tiny", tmp_path, progress=interrupt_after_two)
    # Then the progress was told each count, and the two counted are kept in the cache
    assert seen == [(1, 4), (2, 4)]
    assert set(json.loads(cache_file("tiny", tmp_path).read_text())["counts"]) == set(types[:2])
    # And the next listing counts only the other two
    seen.clear()
    counts = load_param_counts(types, "tiny", tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    assert all(isinstance(counts[t], int) and counts[t] for t in types)
