"""Seeded tensors from a model's config: token ids, pixel values, audio, and the config lookups they need.

The building blocks of :mod:`accelerate_core.catalog.inputs`, :mod:`~accelerate_core.catalog.fillers` and
:mod:`~accelerate_core.catalog.multimodal`; this module imports none of them, so the three depend on it
and never on each other in a circle. Every tensor comes from a generator seeded with :data:`SEED`.
"""

from __future__ import annotations

from typing import Any

SEED = 0
AUDIO_SAMPLES = 16000


def seeded() -> Any:
    """A torch generator seeded with :data:`SEED` (every tensor here is reproducible)."""
    import torch

    return torch.Generator().manual_seed(SEED)


def sub(config: Any, *names: str) -> Any:
    """The first nested sub-config among ``names`` (or ``config`` itself)."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None and hasattr(value, "to_dict"):
            return value
    return config


def attr(config: Any, names: tuple[str, ...], default: Any) -> Any:
    """The first attribute among ``names`` found on the config or its usual sub-configs."""
    for cfg in (
        config,
        sub(config, "text_config", "decoder"),
        sub(config, "vision_config", "encoder"),
        sub(config, "backbone_config"),
    ):
        for name in names:
            value = getattr(cfg, name, None)
            if value is not None:
                return value
    return default


def _special_ids(config: Any) -> set[int]:
    found: set[int] = set()
    stack = [config.to_dict()]
    while stack:
        node = stack.pop()
        for raw_key, value in node.items():
            key = str(raw_key)
            if isinstance(value, dict):
                stack.append(value)
            elif "token" in key and isinstance(value, int) and not isinstance(value, bool):
                found.add(value)
            elif "token" in key and isinstance(value, list):
                found.update(v for v in value if isinstance(v, int))
    return found


def _vocab_sizes(tree: dict[str, Any]) -> list[int]:
    """Every vocabulary size in a config tree (sub-vocabularies under 32 entries are not token vocabularies)."""
    found = []
    for key, value in tree.items():
        if key == "vocab_size" and isinstance(value, int) and value >= 32:
            found.append(value)
        elif isinstance(value, dict):
            found += _vocab_sizes(value)
    return found


def token_ids(config: Any, batch: int, length: int) -> Any:
    """Random ids below every vocabulary size in the config (so any embedding takes them), avoiding special ids."""
    import torch

    vocab = min(_vocab_sizes(config.to_dict()), default=1024)
    banned = _special_ids(config)
    pool = [i for i in range(3, min(vocab, 1000)) if i not in banned] or [0]
    idx = torch.randint(0, len(pool), (batch, length), generator=seeded())
    return torch.tensor(pool)[idx]


def image_hw(config: Any) -> tuple[int, int]:
    """The (height, width) the vision config expects."""
    size = attr(config, ("image_size", "img_size", "input_size"), 224)
    if isinstance(size, dict):
        return int(size.get("height", 224)), int(size.get("width", 224))
    if isinstance(size, list | tuple):
        return (int(size[0]), int(size[-1])) if size else (224, 224)
    return int(size), int(size)


def pixel_values(config: Any, batch: int, *, frames: int | None = None) -> Any:
    """Seeded pixel values (B, C, H, W), or (B, T, C, H, W) when ``frames`` is given."""
    import torch

    channels = int(attr(config, ("num_channels", "in_channels", "num_input_channels"), 3))
    h, w = image_hw(config)
    shape = (batch, frames, channels, h, w) if frames else (batch, channels, h, w)
    return torch.randn(*shape, generator=seeded())


def audio_features(config: Any, batch: int) -> Any:
    """Seeded audio features in the layout the config implies.

    Whisper-style encoders (mel bins, no conformer subsampling) take (B, mel bins, frames: one
    window of 2 x ``n_window`` frames for windowed encoders, else 2 x ``max_source_positions`` when
    set); conformers and the others take (B, frames, feature dim).
    """
    import torch

    cfg = sub(config, "audio_config", "encoder_config", "encoder")
    src = getattr(cfg, "max_source_positions", None)
    window = getattr(cfg, "n_window", None)
    mel = attr(cfg, ("num_mel_bins", "feature_size", "n_mels"), 80)
    conformer = hasattr(cfg, "subsampling_conv_channels") or hasattr(cfg, "subsampling_factor")
    if hasattr(cfg, "num_mel_bins") and not conformer:
        frames = src * 2 if isinstance(src, int) and src <= 3000 else 64
        frames = 2 * window if isinstance(window, int) and 0 < window <= frames else frames
        return torch.randn(batch, int(mel), frames, generator=seeded())
    per_channel = getattr(cfg, "input_feat_per_channel", None)
    if isinstance(per_channel, int):
        dim = per_channel * int(getattr(cfg, "input_channels", 1) or 1)
    else:
        dim = int(attr(cfg, ("feature_projection_input_dim", "input_dim", "num_mel_bins", "feature_size"), 80))
    length = getattr(cfg, "max_length", None)
    frames = int(length) if isinstance(length, int) and 16 <= length <= 1024 else 64
    return torch.randn(batch, frames, dim, generator=seeded())


def audio_values(config: Any, batch: int) -> Any:
    """Seeded waveforms: (B, samples), or (B, channels, samples) for neural codecs (hop-length multiples)."""
    import math

    import torch

    cfg = sub(config, "audio_config", "encoder_config", "acoustic_config")
    ratios = getattr(cfg, "downsampling_ratios", None) or getattr(cfg, "upsampling_ratios", None)
    channels = getattr(cfg, "audio_channels", None)
    if ratios is None and channels is None:
        return torch.randn(batch, AUDIO_SAMPLES, generator=seeded())
    hop = math.prod(int(r) for r in ratios) if ratios else 320
    return torch.randn(batch, int(channels or 1), hop * 32, generator=seeded())
