"""Input builders: seeded, deterministic forward inputs for a tiny model, per modality and family.

:func:`build_inputs` picks the builder named by the exceptions table (``inputs = "..."``) or the
generic one, which reads ``model.main_input_name`` and the forward signature: token ids (+ attention
mask, + decoder ids for encoder-decoders), pixel values (5-D for video), audio values or features,
time-series windows. Only arguments the forward accepts are passed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

SEED = 0
DECODER_LEN = 4
AUDIO_SAMPLES = 16000

Builder = Callable[[Any, int, int, dict[str, Any]], dict[str, Any]]
_BUILDERS: dict[str, Builder] = {}


def builder(name: str) -> Callable[[Builder], Builder]:
    """Register an input builder under ``name`` (the exceptions table refers to it)."""

    def wrap(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn

    return wrap


def builder_names() -> list[str]:
    """Every registered input builder name."""
    return sorted(_BUILDERS)


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


def required_params(model: Any) -> list[str]:
    """The forward's parameters without a default value."""
    sig = inspect.signature(model.forward)
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def forward_params(model: Any) -> tuple[set[str], bool]:
    """The forward's parameter names and whether it takes ``**kwargs``."""
    sig = inspect.signature(model.forward)
    names = {p.name for p in sig.parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def audio_features(config: Any, batch: int) -> Any:
    """Seeded audio features in the layout the config implies.

    Whisper-style encoders (mel bins, no conformer subsampling) take (B, mel bins, frames: 2 x
    ``max_source_positions`` when set); conformers and the others take (B, frames, feature dim).
    """
    import torch

    cfg = sub(config, "audio_config", "encoder_config", "encoder")
    src = getattr(cfg, "max_source_positions", None)
    mel = attr(cfg, ("num_mel_bins", "feature_size", "n_mels"), 80)
    conformer = hasattr(cfg, "subsampling_conv_channels") or hasattr(cfg, "subsampling_factor")
    if hasattr(cfg, "num_mel_bins") and not conformer:
        frames = src * 2 if isinstance(src, int) and src <= 3000 else 64
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


def _time_series(config: Any, batch: int) -> dict[str, Any]:
    import torch

    context = int(attr(config, ("context_length",), 32))
    lags = attr(config, ("lags_sequence",), [0])
    past = context + max(lags or [0])
    channels = int(attr(config, ("input_size", "num_input_channels", "num_channels"), 1))
    shape = (batch, past) if channels == 1 and hasattr(config, "lags_sequence") else (batch, past, channels)
    values = torch.randn(*shape, generator=seeded())
    n_time = int(attr(config, ("num_time_features",), 0))
    out: dict[str, Any] = {"past_values": values, "past_observed_mask": torch.ones_like(values)}
    if hasattr(config, "lags_sequence"):
        out["past_time_features"] = torch.randn(batch, past, n_time, generator=seeded())
        pred = int(attr(config, ("prediction_length",), 8))
        out["future_time_features"] = torch.randn(batch, pred, n_time, generator=seeded())
    return out


@builder("generic")
def generic(model: Any, batch: int, seq: int, args: dict[str, Any]) -> dict[str, Any]:
    """Inputs from ``main_input_name``: tokens, pixels, audio or time series (+ decoder ids)."""
    import torch

    from accelerate_core.catalog.fillers import fill, has_filler
    from accelerate_core.catalog.multimodal import add_images, add_text

    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    if isinstance(main, list | tuple):  # a few models name several main inputs; the first leads
        main = main[0] if main else "input_ids"
    params, _ = forward_params(model)
    out: dict[str, Any] = {}
    if main == "pixel_values":
        frames = attr(config, ("num_frames", "frames_per_clip"), None) if args.get("frames", True) else None
        out["pixel_values"] = pixel_values(config, batch, frames=frames)
    elif main == "pixel_values_videos":
        out["pixel_values_videos"] = pixel_values(config, batch, frames=int(attr(config, ("num_frames",), 8)))
    elif main == "input_values":
        out["input_values"] = audio_values(config, batch)
    elif main == "input_features":
        out["input_features"] = audio_features(config, batch)
    elif main == "past_values":
        out.update(_time_series(config, batch))
    elif main != "input_ids" and has_filler(main):
        fill(model, out, batch, seq, [main])
    else:
        out["input_ids"] = token_ids(config, batch, seq)
        out["attention_mask"] = torch.ones(batch, seq, dtype=torch.long)
    fill(model, out, batch, seq, list(args.get("fill", [])))

    add_text(model, out, batch, seq, params)
    if args.get("images", True):
        add_images(model, out, batch, params)
    fill(model, out, batch, seq, required_params(model))
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params and main != "past_values":
        out["decoder_input_ids"] = token_ids(config, batch, DECODER_LEN)
    return out


def _materialize(spec: Any, batch: int, seq: int) -> Any:
    """A fixed extra input from the table: ``{shape = [...], dtype = "long"|"float"|"bool", fill = x}``.

    ``B`` and ``S`` in a shape stand for the batch size and sequence length; ``ones_first = n`` makes a
    mask with the first n positions set; ``high`` bounds random integers; ``{value = [...]}`` is a
    literal tensor, stacked once per sample with ``per_sample = true``; a list of specs is a list of tensors.
    """
    import torch

    if isinstance(spec, list) and spec and all(isinstance(item, dict) for item in spec):
        return [_materialize(item, batch, seq) for item in spec]  # a list of tensors (feature pyramid)
    if isinstance(spec, dict) and "value" in spec:  # a literal tensor, e.g. a (t, h, w) grid row per sample
        dtype = {"long": torch.long, "float": torch.float32}[spec.get("dtype", "long")]
        value = torch.tensor(spec["value"], dtype=dtype)
        return torch.stack([value] * batch) if spec.get("per_sample") else value
    if not isinstance(spec, dict) or "shape" not in spec:
        return spec
    shape = [batch if d == "B" else seq if d == "S" else int(d) for d in spec["shape"]]
    dtype = {"long": torch.long, "float": torch.float32, "bool": torch.bool}[spec.get("dtype", "float")]
    if "fill" in spec:
        return torch.full(shape, spec["fill"], dtype=dtype)
    if "ones_first" in spec:  # a mask marking the first n positions of the last dimension
        mask = torch.zeros(shape, dtype=dtype)
        mask[..., : int(spec["ones_first"])] = 1
        return mask
    if dtype is torch.long:
        return torch.randint(0, int(spec.get("high", 2)), shape, generator=seeded())
    if dtype is torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    return torch.rand(*shape, generator=seeded())


def build_inputs(
    model: Any,
    *,
    name: str | None,
    args: dict[str, Any],
    extra: dict[str, Any],
    drop: tuple[str, ...],
    batch_size: int,
    seq_len: int,
) -> dict[str, Any]:
    """Inputs for ``model``: the named builder (or the generic one), fixed extras, minus dropped names."""
    fn = _BUILDERS[name or "generic"]
    out = fn(model, batch_size, seq_len, args)
    for key, spec in extra.items():
        out[key] = _materialize(spec, batch_size, seq_len)
    params, _ = forward_params(model)
    # Only named forward arguments: ``**kwargs`` of v5 models are attention/output flags, not inputs.
    return {k: v for k, v in out.items() if k not in drop and (k in params or k in extra)}
