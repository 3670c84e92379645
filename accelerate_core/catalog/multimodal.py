"""Image inputs for text+image models: pixel values and, for models that splice image features into
the token sequence, the right number of image placeholder tokens.

The number of placeholders is not guessed from sizes: it is measured once by calling the model's own
``get_image_features`` on the seeded pixel values (deterministic), so it always matches the tiny
vision tower.
"""

from __future__ import annotations

from typing import Any

from accelerate_core.catalog.fillers import fill, grid_pixels, grid_thw, patch_pixels, vision_of
from accelerate_core.catalog.tensors import pixel_values, sub, token_ids

_TOKEN_KEYS = ("image_token_id", "image_token_index", "image_token")
_AUDIO_TOKEN_KEYS = ("audio_token_id", "audio_token_index", "audio_token")


def image_token(config: Any, keys: tuple[str, ...] = _TOKEN_KEYS) -> int | None:
    """The placeholder token id a model replaces by image (or ``keys``') features, or None (dual encoders)."""
    for cfg in (config, sub(config, "text_config")):
        for key in keys:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _count(features: Any, batch: int) -> int | None:
    """Placeholder tokens per sample from what ``get_image_features`` returned."""
    import torch

    if hasattr(features, "pooler_output") and features.pooler_output is not None:
        features = features.pooler_output
    elif hasattr(features, "last_hidden_state") and not isinstance(features, torch.Tensor):
        features = features.last_hidden_state
    if isinstance(features, list | tuple):
        tensors = [f for f in features if isinstance(f, torch.Tensor)]
        total = sum(int(f.numel() // f.shape[-1]) for f in tensors)
    elif isinstance(features, torch.Tensor):
        total = int(features.numel() // features.shape[-1])
    else:
        return None
    return total // batch if total and total % batch == 0 else None


def _features_count(
    model: Any, batch: int, inputs: dict[str, Any], getter_name: str = "get_image_features"
) -> int | None:
    """Placeholder tokens per sample, measured by the model's own ``get_*_features`` on ``inputs``."""
    import torch

    getter = getattr(model, getter_name, None)
    if getter is None and hasattr(model, "model"):
        getter = getattr(model.model, getter_name, None)
    if getter is None:
        return None
    try:
        with torch.no_grad():
            return _count(getter(**inputs), batch)
    except Exception:
        return None


def _prepend(out: dict[str, Any], token: int, n: int, batch: int) -> None:
    """Put ``n`` placeholder tokens in front of every sample's token ids (and widen the mask)."""
    import torch

    ids = torch.cat([torch.full((batch, n), token, dtype=out["input_ids"].dtype), out["input_ids"]], dim=1)
    out["input_ids"] = ids
    out["attention_mask"] = torch.ones_like(ids)


def add_text(model: Any, out: dict[str, Any], batch: int, seq: int, params: set[str]) -> None:
    """Add token ids (+ mask) to an image/audio-first model that also reads text (CLIP-style, grounding)."""
    import torch

    config = model.config
    if "input_ids" not in params or "input_ids" in out or sub(config, "text_config") is config:
        return
    out["input_ids"] = token_ids(sub(config, "text_config"), batch, seq)
    out["attention_mask"] = torch.ones(batch, seq, dtype=torch.long)


def add_images(model: Any, out: dict[str, Any], batch: int, params: set[str]) -> None:
    """Add ``pixel_values`` (and placeholder tokens in front of ``input_ids``) where the model takes images."""
    import torch

    if "pixel_values" not in params or "pixel_values" in out or "input_ids" not in out:
        return
    config = model.config
    vision = vision_of(config)
    pixels = pixel_values(vision, batch)
    extra: dict[str, Any] = {}
    if "image_grid_thw" in params:
        pixels = grid_pixels(vision, batch)
        extra["image_grid_thw"] = grid_thw(vision, batch)
    if "spatial_shapes" in params:
        extra["spatial_shapes"] = torch.tensor([[4, 4]] * batch)
        extra["pixel_attention_mask"] = torch.ones(batch, 16, dtype=torch.long)
        pixels = patch_pixels(config, batch, 16)
    if "image_sizes" in params:
        extra["image_sizes"] = torch.tensor([list(pixels.shape[-2:])] * batch)
    token = image_token(config)
    if token is None:
        out["pixel_values"] = pixels
        out.update(extra)
        return
    n = _features_count(model, batch, {"pixel_values": pixels, **extra})
    if n is None:
        return
    _prepend(out, token, n, batch)
    out["pixel_values"] = pixels
    out.update(extra)
    if "mm_token_type_ids" in params:
        out["mm_token_type_ids"] = (out["input_ids"] == token).long()


def add_audio(model: Any, out: dict[str, Any], batch: int, seq: int, params: set[str]) -> None:
    """Add audio features (+ their frame mask) and as many audio placeholder tokens as the audio tower makes.

    For audio-language models whose forward splices audio features into the token sequence; the
    count is measured with the model's own ``get_audio_features``.
    """
    token = image_token(model.config, _AUDIO_TOKEN_KEYS)
    if "input_features" not in params or "input_features" in out or "input_ids" not in out or token is None:
        return
    audio: dict[str, Any] = {}
    fill(model, audio, batch, seq, ["input_features"])
    masks: list[str] = [name for name in ("feature_attention_mask", "input_features_mask") if name in params]
    fill(model, audio, batch, seq, masks)
    n = _features_count(model, batch, audio, "get_audio_features")
    if n is None:
        return
    _prepend(out, token, n, batch)
    out.update(audio)
