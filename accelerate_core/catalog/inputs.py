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

from accelerate_core.catalog.fillers import fill, has_filler
from accelerate_core.catalog.multimodal import add_audio, add_images, add_text
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

DECODER_LEN = 4

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
    if args.get("audio", False):
        add_audio(model, out, batch, seq, params)
    fill(model, out, batch, seq, required_params(model))
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params and main != "past_values":
        out["decoder_input_ids"] = token_ids(config, batch, DECODER_LEN)
    return out


@builder("video_session")
def video_session(model: Any, batch: int, seq: int, args: dict[str, Any]) -> dict[str, Any]:
    """A tracking session for SAM-style video models: ``frames`` seeded frames and one prompt on frame 0.

    The session is the model's own ``*InferenceSession`` class (what its processor would build),
    filled without the processor: the point sits at the centre of the model's input image.
    """
    import sys

    import torch

    module = sys.modules[type(model).__module__]
    session_class = next(v for k, v in vars(module).items() if k.endswith("VideoInferenceSession"))
    h, w = image_hw(sub(model.config, "vision_config"))
    video = torch.randn(int(args.get("frames", 2)), 3, h, w, generator=seeded())
    session = session_class(video=video, video_height=h, video_width=w, dtype=torch.float32)
    if hasattr(session, "add_prompt"):  # text-prompted (SAM3 video): a tokenized prompt
        prompt = session.add_prompt("object")
        session.prompt_input_ids[prompt] = token_ids(sub(model.config, "text_config"), 1, 8)
        session.prompt_attention_masks[prompt] = torch.ones(1, 8, dtype=torch.long)
    else:  # point-prompted (SAM2 video, SAM3 tracker): one positive point at the image centre
        point = {
            "point_coords": torch.tensor([[[[w / 2, h / 2]]]], dtype=torch.float32),
            "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
        }
        session.add_point_inputs(session.obj_id_to_idx(1), 0, point)
        session.obj_with_new_inputs = [1]
    return {"inference_session": session, "frame_idx": 0}


def _dim(size: int | str, batch: int, seq: int) -> int:
    """One dimension of a table shape: a number, ``B`` (batch), ``S`` (sequence) or ``B*k`` (k rows per sample)."""
    name, _, factor = str(size).partition("*")
    base = batch if name == "B" else seq if name == "S" else int(name)
    return base * int(factor or 1)


def _materialize(spec: Any, batch: int, seq: int) -> Any:
    """A fixed extra input from the table: ``{shape = [...], dtype = "long"|"float"|"bool", fill = x}``.

    ``B`` and ``S`` in a shape stand for the batch size and sequence length (``"B*4"``: four rows per
    sample, e.g. one per audio codebook); ``ones_first = n`` makes a
    mask with the first n positions set; ``high`` bounds random integers; ``{value = [...]}`` is a
    literal tensor, stacked once per sample with ``per_sample = true``; a list of specs is a list of
    tensors and a table of specs a dict of them.
    """
    import torch

    if isinstance(spec, list) and spec and all(isinstance(item, dict) for item in spec):
        return [_materialize(item, batch, seq) for item in spec]  # a list of tensors (feature pyramid)
    if isinstance(spec, dict) and spec and "shape" not in spec and "value" not in spec:
        return {key: _materialize(item, batch, seq) for key, item in spec.items()}  # named tensors (KV states)
    if isinstance(spec, dict) and "value" in spec:  # a literal tensor, e.g. a (t, h, w) grid row per sample
        dtype = {"long": torch.long, "float": torch.float32}[spec.get("dtype", "long")]
        value = torch.tensor(spec["value"], dtype=dtype)
        return torch.stack([value] * batch) if spec.get("per_sample") else value
    if not isinstance(spec, dict) or "shape" not in spec:
        return spec
    shape = [_dim(d, batch, seq) for d in spec["shape"]]
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
