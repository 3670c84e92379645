"""load_checkpoint_and_dispatch with a real tiny BERT: from a saved checkpoint, from a type name, and errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accelerate_core.backends import detect, get_backend
from accelerate_core.dispatch import load_checkpoint_and_dispatch
from accelerate_core.errors import HardwareUnavailableError, ModelBuildError, UnknownModelError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A tiny BERT with random weights written by save_pretrained, and its state dict."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = transformers.BertForMaskedLM(config)
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_saved_checkpoint_is_loaded_back_from_local_files(checkpoint: tuple[Path, dict[str, object]]) -> None:
    # Given a checkpoint directory written by save_pretrained
    path, saved = checkpoint
    # When it is dispatched automatically
    d = load_checkpoint_and_dispatch(path)
    # Then it is the same model (class from config.architectures, same weights), on cpu, in eval mode
    assert type(d.model).__name__ == "BertForMaskedLM"
    assert (d.source_kind, d.hardware, d.device, d.dtype) == ("checkpoint", "cpu", "cpu", "float32")
    assert not d.model.training
    loaded = d.model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    with torch.no_grad():
        logits = d.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 512)


def test_a_checkpoint_in_bfloat16(checkpoint: tuple[Path, dict[str, object]]) -> None:
    d = load_checkpoint_and_dispatch(str(checkpoint[0]), dtype="bf16")
    assert d.dtype == "bfloat16"
    assert {p.dtype for p in d.model.parameters()} == {torch.bfloat16}
    assert d.selection.required_mb and d.selection.required_mb > 0


def test_a_model_type_is_built_tiny() -> None:
    d = load_checkpoint_and_dispatch("bert", hardware="cpu")
    assert (d.source_kind, d.device) == ("model-type", "cpu")
    assert not d.model.training
    assert sum(p.numel() for p in d.model.parameters()) < 5_000_000
    assert next(d.model.parameters()).device.type == "cpu"
    # The catalog built it, with forward inputs on the same device
    assert d.inputs is not None and "input_ids" in d.inputs
    with torch.no_grad():
        assert d.model(**d.inputs).last_hidden_state.shape[0] == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no_such_model_type", "unknown model 'no_such_model_type': give a model type"),
        ("no-org/no-such-model", "'no-org/no-such-model' is not in the local Hugging Face cache: fetch it with"),
        ("./missing/checkpoint", "checkpoint directory './missing/checkpoint' does not exist"),
        ("", "empty model source"),
    ],
)
def test_an_unknown_source_is_one_clear_line(source: str, message: str) -> None:
    with pytest.raises(UnknownModelError) as e:
        load_checkpoint_and_dispatch(source)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_a_directory_without_config_is_not_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownModelError, match=r"has no config\.json"):
        load_checkpoint_and_dispatch(tmp_path)
    # A bare name is a model type even when a folder of that name (without config.json) is in the way
    (tmp_path / "bert").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_checkpoint_and_dispatch("bert", hardware="cpu").source_kind == "model-type"


def test_a_cached_hub_id_is_its_snapshot_as_the_model_sources_resolve_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a hub id in a local Hugging Face cache (the one parser of model names, accelerate_core.sources, finds it)
    import huggingface_hub.constants

    from tests.support.checkpoints import cache_tiny

    cache_tiny(tmp_path / "hub", "acme/tiny-bert", "bert")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # When it is dispatched
    d = load_checkpoint_and_dispatch("acme/tiny-bert", hardware="cpu")
    # Then its snapshot is loaded as a checkpoint
    assert (d.source_kind, d.device, d.model.config.model_type) == ("checkpoint", "cpu", "bert")


def test_missing_hardware_is_a_clear_error() -> None:
    if detect().has("cuda"):
        pytest.skip("this machine has CUDA")
    with pytest.raises(HardwareUnavailableError, match="no cuda device"):
        load_checkpoint_and_dispatch("bert", hardware="cuda")


def test_many_threads_dispatch_at_once_in_a_fresh_pinned_interpreter(
    checkpoint: tuple[Path, dict[str, object]],
) -> None:
    # Given a fresh interpreter (nothing imported yet) started with the CPU pinning env (1 thread)
    env = {**os.environ, **get_backend("cpu").pin_env(0, threads=1)}
    # When 4 threads dispatch at once, half from the checkpoint and half by type name
    code = f"""
import json, threading
from accelerate_core.dispatch import load_checkpoint_and_dispatch
sources = [{str(checkpoint[0])!r}, "bert"] * 2
barrier = threading.Barrier(len(sources))
out = []
def run(src):
    barrier.wait()
    try:
        d = load_checkpoint_and_dispatch(src)
        out.append([d.source_kind, d.device, d.model.training])
    except Exception as e:
        out.append(repr(e))
threads = [threading.Thread(target=run, args=(s,)) for s in sources]
[t.start() for t in threads]
[t.join() for t in threads]
import torch
print(json.dumps({{"results": out, "threads": torch.get_num_threads(), "gpus": torch.cuda.device_count()}}))
"""
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    # Then every thread got an eval-mode model on cpu, and the pinning env capped torch at 1 thread, no GPU
    results = sorted(map(tuple, data["results"]))
    assert results == [("checkpoint", "cpu", False)] * 2 + [("model-type", "cpu", False)] * 2
    assert (data["threads"], data["gpus"]) == (1, 0)


class _RunsCode:
    """Unpickling this writes a marker file: what a hostile ``.bin`` checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _bin_checkpoint(folder: Path, source: Path, *, hostile_marker: Path | None = None) -> Path:
    """A ``.bin``-only checkpoint: the config of ``source`` and its weights written by torch.save (pickle)."""
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    model = transformers.BertForMaskedLM.from_pretrained(source)
    state: dict[str, object] = dict(model.state_dict())
    if hostile_marker is not None:
        state["payload"] = _RunsCode(hostile_marker)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_a_bin_only_checkpoint_of_plain_tensors_loads(checkpoint, tmp_path: Path) -> None:
    path, saved = checkpoint
    folder = _bin_checkpoint(tmp_path / "bin", path)

    d = load_checkpoint_and_dispatch(folder)

    assert type(d.model).__name__ == "BertForMaskedLM"
    assert all(torch.equal(d.model.state_dict()[name], tensor) for name, tensor in saved.items())


def test_a_bin_checkpoint_whose_pickle_would_run_code_is_refused_without_running_it(checkpoint, tmp_path: Path):
    marker = tmp_path / "ran"
    folder = _bin_checkpoint(tmp_path / "hostile", checkpoint[0], hostile_marker=marker)

    with pytest.raises(ModelBuildError, match=r"refused checkpoint .*holds more than tensors") as e:
        load_checkpoint_and_dispatch(folder)

    assert not marker.exists()
    assert "\n" not in str(e.value)


def test_safetensors_are_preferred_and_a_hostile_bin_beside_them_is_never_read(checkpoint, tmp_path: Path):
    marker = tmp_path / "ran"
    path, saved = checkpoint
    folder = _bin_checkpoint(tmp_path / "both", path, hostile_marker=marker)
    (folder / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())

    d = load_checkpoint_and_dispatch(folder)

    assert not marker.exists()
    assert all(torch.equal(d.model.state_dict()[name], tensor) for name, tensor in saved.items())


@pytest.mark.parametrize("architecture", ["os.system", "pipeline", "AutoTokenizer", "BertConfig", "NoSuchModel"])
def test_architectures_must_name_a_model_class_of_transformers(checkpoint, tmp_path: Path, architecture: str):
    folder = tmp_path / "odd"
    folder.mkdir()
    config = json.loads((checkpoint[0] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    (folder / "model.safetensors").write_bytes((checkpoint[0] / "model.safetensors").read_bytes())

    with pytest.raises(ModelBuildError, match=re.escape(f"names architecture '{architecture}', which is not a model")):
        load_checkpoint_and_dispatch(folder)
