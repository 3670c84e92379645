"""On a machine with a GPU: detection, dispatch of the tiny BERT there, sync and peak memory (marked ``gpu``)."""

from __future__ import annotations

import pytest

from accelerate_core.backends import ModelRequirements, detect, get_backend, select_hardware
from accelerate_core.dispatch import load_checkpoint_and_dispatch

pytestmark = pytest.mark.gpu


def _gpu_kind() -> str:
    inventory = detect()
    for kind in ("cuda", "rocm", "mps"):
        if inventory.has(kind):
            return kind
    pytest.fail("marked gpu but no cuda/rocm/mps device was detected: run `accel detect`")


def test_the_gpu_is_detected_with_its_facts() -> None:
    kind = _gpu_kind()
    device = detect().of(kind)[0]
    assert device.name and device.total_memory_mb and device.total_memory_mb > 1024
    if kind == "cuda":
        assert device.compute_capability and device.driver_version
    if kind == "rocm":
        assert device.arch and device.arch.startswith("gfx")
    assert select_hardware(ModelRequirements(), detect()).kind == kind  # a GPU is preferred over the cpu


def test_tiny_bert_is_dispatched_to_the_gpu_and_runs() -> None:
    import torch

    kind = _gpu_kind()
    backend = get_backend(kind)
    backend.reset_peak_memory()
    d = load_checkpoint_and_dispatch("bert", hardware=kind)
    assert d.hardware == kind and next(d.model.parameters()).device.type == d.device.split(":")[0]
    with torch.no_grad():
        d.model(input_ids=torch.tensor([[1, 2, 3, 4]], device=d.device))
    backend.synchronize()
    assert backend.peak_memory_mb() > 0
