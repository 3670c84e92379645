"""``accel generate`` and ``accel models check`` take the same model sources as ``accel run`` (one parser,
``accelerate_core.selection``): model types, checkpoint directories and hub ids in the local Hugging Face cache,
mixed in ``--models``, an ``@file`` or the TOML ``models`` key; a bad one is one line naming where it came from.

Real CLI processes, offline (``HF_HUB_OFFLINE=1``), on real tiny checkpoints (``tests.support.checkpoints``);
cwd is the repository so the cached catalog index is shared with the other tests.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkpoints import SHA, cache_tiny, save_tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint directory (tiny bert) and an HF cache holding ``acme/tiny-gpt2`` (tiny gpt2)."""
    root = tmp_path_factory.mktemp("source-commands")
    cache = root / "hub"
    return {"root": root, "checkpoint": save_tiny("bert", root / "my-bert"), "cache": cache,
            "snapshot": cache_tiny(cache, "acme/tiny-gpt2", "gpt2")}  # fmt: skip


def _accel(sources: dict[str, Path], toml: str, *args: str) -> subprocess.CompletedProcess[str]:
    root = sources["root"]
    config = root / "accel.toml"
    config.write_text(f'templates_db = "{root / "templates.duckdb"}"\n{toml}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCEL_", "HF_"))}
    env.update(HF_HUB_CACHE=str(sources["cache"]), HF_HUB_OFFLINE="1")
    argv = [sys.executable, "-m", "scheduler", "--config", str(config), *args]
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text())
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id.isupper()
            and isinstance(n.value, ast.Constant)}  # fmt: skip


def test_generate_writes_a_file_per_source_of_a_mixed_at_file(sources: dict[str, Path]) -> None:
    # Given an @file naming a type, a checkpoint directory, a cached hub id and one not in the cache
    listing = sources["root"] / "models.txt"
    listing.write_text(f"vit\n{sources['checkpoint']}  # my checkpoint\nacme/tiny-gpt2, acme/not-cached\n")
    out = sources["root"] / "generated"
    # When accel generate reads it
    done = _accel(sources, "", "generate", "--models", f"@{listing}", "--out", str(out), "--json")
    # Then each buildable source has its file, named by its label, loading the checkpoint's weights
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"] == {"written": 3, "skipped": 1, "failed": 0}
    written = {f["model_type"]: f for f in report["written"]}
    assert sorted(p.name for p in out.iterdir()) == ["test_acme__tiny_gpt2.py", "test_my_bert.py", "test_vit.py"]
    assert written["acme--tiny-gpt2"]["source"] == f"hub:acme/tiny-gpt2@{SHA[:12]}"
    assert written["my-bert"]["source"].startswith("dir:") and written["vit"]["source"] == "type:vit"
    assert _constants(out / "test_my_bert.py")["CHECKPOINT"] == str(sources["checkpoint"].resolve())
    assert _constants(out / "test_acme__tiny_gpt2.py")["CHECKPOINT"] == str(sources["snapshot"])
    assert _constants(out / "test_vit.py")["CHECKPOINT"] is None
    # And the one not in the cache is listed with the command that fetches it
    (skipped,) = report["skipped"]
    assert skipped["model_type"] == "acme--not-cached" and skipped["reason_class"] == "not-in-cache"
    assert "hf download acme/not-cached" in skipped["reason"]


def test_models_check_runs_the_checkpoints_the_toml_models_key_names(sources: dict[str, Path]) -> None:
    # Given accel.toml's models key naming a checkpoint directory, a cached hub id and one not in the cache
    toml = f'models = ["{sources["checkpoint"]}", "acme/tiny-gpt2", "acme/not-cached"]\n'
    out = sources["root"] / "check.json"
    # When accel models check runs without --models
    done = _accel(sources, toml, "models", "check", "--jobs", "2", "--out", str(out), "--json")
    # Then each checkpoint is built from its own weights and passes its forward pass (and generate, for gpt2)
    assert done.returncode == 0, done.stderr
    rows = {r["model_type"]: r for r in json.loads(out.read_text())["outcomes"]}
    assert set(rows) == {"my-bert", "acme--tiny-gpt2", "acme--not-cached"}
    assert rows["my-bert"]["status"] == "pass" and rows["my-bert"]["source"].startswith("dir:")
    assert rows["my-bert"]["output"]["shape"][0] == 1 and rows["my-bert"]["model_class"] == "BertModel"
    hub = rows["acme--tiny-gpt2"]
    assert hub["status"] == "pass" and hub["source"] == f"hub:acme/tiny-gpt2@{SHA[:12]}" and hub["generate"]["ok"]
    assert hub["param_count"] > 0 and rows["my-bert"]["param_count"] > 0
    missing = rows["acme--not-cached"]
    assert missing["status"] == "skipped" and missing["reason_class"] == "not-in-cache"
    assert json.loads(done.stdout)["total"] == 3


@pytest.mark.parametrize(
    ("command", "toml", "says"),
    [
        (("models", "check"), 'models = ["bert", "./no-such-dir"]\n',
         "models: checkpoint directory './no-such-dir' does not exist"),
        (("generate", "--out", "g"), 'models = "bert,berrt"\n', "models: unknown model 'berrt'"),
        (("run", "--phase", "p", "--hardware", "cpu"), "models = 3\n", "models = 3 is an integer, not an array"),
    ],
)  # fmt: skip
def test_a_bad_toml_models_key_is_one_line_naming_the_key(
    sources: dict[str, Path], command: tuple[str, ...], toml: str, says: str
) -> None:
    done = _accel(sources, toml, *command)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert str(sources["root"] / "accel.toml") in lines[0] and says in lines[0]
