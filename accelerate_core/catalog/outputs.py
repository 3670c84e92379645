"""Checking a forward pass's outputs: a tensor with the batch dimension exists, and it is finite.

Works on a ``ModelOutput``, a dict, a tuple/list or a bare tensor. The *main* output is the first of
the preferred names (``logits``, ``last_hidden_state``, ...) that holds a tensor with the batch
dimension, else the first such tensor in output order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_PREFERRED = (
    "logits",
    "last_hidden_state",
    "prediction_logits",
    "pred_boxes",
    "predicted_depth",
    "reconstruction",
    "spectrogram",
    "waveform",
    "audio_values",
    "prediction_outputs",
    "sequences",
    "pooler_output",
)


def _items(outputs: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, tensor) for every tensor in a (nested) output, in order."""
    import torch

    if isinstance(outputs, torch.Tensor):
        yield prefix or "output", outputs
    elif isinstance(outputs, dict):  # ModelOutput is an OrderedDict
        for key, value in outputs.items():
            yield from _items(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(outputs, list | tuple):
        for i, value in enumerate(outputs):
            yield from _items(value, f"{prefix}[{i}]" if prefix else f"[{i}]")
    elif hasattr(outputs, "to_tuple"):
        yield from _items(outputs.to_tuple(), prefix)


def _main(items: list[tuple[str, Any]], batch_size: int) -> tuple[str, Any]:
    batched = [(n, t) for n, t in items if t.dim() > 0 and t.shape[0] == batch_size]
    if not batched:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in items[:6]) or "no tensors at all"
        raise AssertionError(f"no output tensor has the batch dimension {batch_size}: {shapes}")
    for name in _PREFERRED:
        for n, t in batched:
            if n == name:
                return n, t
    return batched[0]


def check_outputs(outputs: Any, batch_size: int, *, allow_nonfinite: bool = False) -> dict[str, Any]:
    """Assert a forward pass produced usable outputs and summarise them.

    Args:
        outputs: What the model's forward returned.
        batch_size: The batch size of the inputs.
        allow_nonfinite: Accept inf/nan in the main output (masked logits by design).

    Returns:
        ``{"main": name, "shape": [...], "dtype": "torch.float32", "tensors": count}``.

    Raises:
        AssertionError: No tensor with the batch dimension, or a non-finite floating main output.
    """
    import torch

    items = list(_items(outputs))
    name, main = _main(items, batch_size)
    if main.is_floating_point() and not allow_nonfinite and main.numel() and not bool(torch.isfinite(main).all()):
        bad = int((~torch.isfinite(main)).sum())
        raise AssertionError(f"output {name}{tuple(main.shape)} has {bad} non-finite values")
    return {"main": name, "shape": list(main.shape), "dtype": str(main.dtype), "tensors": len(items)}
