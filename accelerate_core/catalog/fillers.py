"""Inputs by name: how to make a forward argument the main input builder did not provide.

Used for arguments the forward *requires* (no default) and for a few the model cannot run without
although they default to None. Each filler returns a seeded tensor (or None when it does not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accelerate_core.catalog.tensors import (
    attr,
    audio_features,
    audio_values,
    image_hw,
    pixel_values,
    seeded,
    sub,
    token_ids,
)

Filler = Callable[[Any, int, int, dict[str, Any]], Any]
_FILLERS: dict[str, Filler] = {}
GRID = 1  # merged tokens per side: one merged token per image keeps the batch dimension in packed outputs


def filler(*names: str) -> Callable[[Filler], Filler]:
    """Register a filler for forward arguments called ``names``."""

    def wrap(fn: Filler) -> Filler:
        for name in names:
            _FILLERS[name] = fn
        return fn

    return wrap


def vision_of(config: Any) -> Any:
    """The vision sub-config (or the config itself)."""
    return sub(config, "vision_config", "vision_encoder_config", "image_config")


def grid_geometry(vision: Any) -> tuple[int, int, int]:
    """(patches per image, features per patch, grid side) of a Qwen-VL-style patchified image."""
    patch = int(attr(vision, ("patch_size",), 14))
    temporal = int(getattr(vision, "temporal_patch_size", 1) or 1)
    channels = int(attr(vision, ("in_channels", "num_channels", "in_chans"), 3))
    merge = int(getattr(vision, "spatial_merge_size", 1) or 1)
    side = GRID * merge
    return side * side, channels * temporal * patch * patch, side


def grid_thw(vision: Any, batch: int) -> Any:
    """One (t, h, w) grid row per image."""
    import torch

    _, _, side = grid_geometry(vision)
    return torch.tensor([[1, side, side]] * batch)


def grid_pixels(vision: Any, batch: int) -> Any:
    """Patchified pixels (batch * patches, features per patch)."""
    import torch

    n, feat, _ = grid_geometry(vision)
    return torch.randn(batch * n, feat, generator=seeded())


@filler("input_ids", "decoder_input_ids", "labels_ids")
def _ids(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return token_ids(sub(config, "text_config"), batch, seq)


@filler("qformer_input_ids")
def _qformer_ids(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return token_ids(sub(config, "qformer_config"), batch, seq)


@filler("attention_mask", "qformer_attention_mask", "decoder_attention_mask")
def _mask(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    return torch.ones(batch, seq, dtype=torch.long)


@filler("pixel_values", "prompt_pixel_values", "image")
def _pixels(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return pixel_values(vision_of(config), batch)


@filler("prompt_masks")
def _prompt_masks(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return pixel_values(vision_of(config), batch)


@filler("input_values")
def _audio(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return audio_values(config, batch)


@filler("input_features")
def _features(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return audio_features(sub(config, "audio_config", "encoder_config"), batch)


@filler("grid_thw", "image_grid_thw")
def _grid(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    return grid_thw(vision_of(config), batch)


@filler("hidden_states")
def _hidden(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    if "grid_thw" in out:
        return grid_pixels(vision_of(config), batch)
    width = int(attr(config, ("hidden_size", "d_model"), 32))
    return torch.randn(batch, seq, width, generator=seeded())


@filler("bbox")
def _bbox(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    low = torch.randint(0, 400, (batch, seq, 2), generator=seeded())
    return torch.cat([low, low + 100], dim=-1)


@filler("image_sizes")
def _sizes(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    return torch.tensor([list(image_hw(vision_of(config)))] * batch)


@filler("spatial_shapes")
def _spatial(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    return torch.tensor([[GRID * 4, GRID * 4]] * batch)


@filler("pixel_attention_mask")
def _pixel_mask(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    if "spatial_shapes" not in out:
        return None
    return torch.ones(batch, int(out["spatial_shapes"][0].prod()), dtype=torch.long)


def patch_pixels(config: Any, batch: int, n: int) -> Any:
    """Pre-patchified pixels (batch, n patches, channels * patch * patch), as Siglip2-style models take them."""
    import torch

    vision = vision_of(config)
    patch = int(attr(vision, ("patch_size",), 16))
    channels = int(attr(vision, ("num_channels", "in_channels"), 3))
    return torch.randn(batch, n, channels * patch * patch, generator=seeded())


@filler("flattened_patches")
def _flattened(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    vision = vision_of(config)
    patch = int(attr(vision, ("patch_embed_hidden_size",), 0)) or 3 * 16 * 16
    patches = torch.randn(batch, 16, patch, generator=seeded())
    rows = torch.arange(1, 17).view(1, 16, 1).expand(batch, 16, 1).float()
    return torch.cat([rows, rows, patches], dim=-1)


@filler("input_features_mask", "feature_attention_mask")
def _features_mask(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    features = out.get("input_features")
    if features is None:
        return None
    cfg = sub(config, "audio_config", "encoder_config", "encoder")
    mel = getattr(cfg, "num_mel_bins", None)
    frames = features.shape[-1] if features.dim() == 3 and features.shape[1] == mel else features.shape[1]
    return torch.ones(batch, int(frames), dtype=torch.long)


@filler("inputs_embeds", "encoder_hidden_states")
def _embeds(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    width = int(attr(config, ("hidden_size", "d_model", "embed_dim"), 32))
    return torch.randn(batch, seq, width, generator=seeded())


@filler("merge_sizes")
def _merge_sizes(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    merge = int(getattr(vision_of(config), "spatial_merge_size", 1) or 1)
    return torch.tensor([merge] * batch)


@filler("target_sizes", "tgt_sizes")
def _target_sizes(config: Any, batch: int, seq: int, out: dict[str, Any]) -> Any:
    import torch

    pixels = out.get("pixel_values")
    if pixels is None or pixels.dim() != 4:
        return None
    patch = int(attr(vision_of(config), ("patch_size",), 14))
    return torch.tensor([[pixels.shape[-2] // patch, pixels.shape[-1] // patch]] * batch, dtype=torch.int32)


def has_filler(name: str) -> bool:
    """True when a filler makes the forward argument ``name``."""
    return name in _FILLERS


def fill(model: Any, out: dict[str, Any], batch: int, seq: int, names: list[str]) -> None:
    """Fill each of ``names`` missing from ``out`` that has a filler (grid first: hidden states depend on it)."""
    first = ("grid_thw", "image_grid_thw", "spatial_shapes", "input_features")
    for name in sorted(names, key=lambda n: n not in first):
        fn = _FILLERS.get(name)
        if name not in out and fn is not None:
            value = fn(model.config, batch, seq, out)
            if value is not None:
                out[name] = value
    grid = "grid_thw" in out or "image_grid_thw" in out
    if grid and "pixel_values" in out and out["pixel_values"].dim() == 4:
        out["pixel_values"] = grid_pixels(vision_of(model.config), batch)
    if "spatial_shapes" in out and "pixel_values" in out and out["pixel_values"].dim() == 4:
        n = int(out["spatial_shapes"][0].prod())
        out["pixel_values"] = patch_pixels(model.config, batch, n)
        out.setdefault("pixel_attention_mask", _pixel_mask(model.config, batch, seq, out))
