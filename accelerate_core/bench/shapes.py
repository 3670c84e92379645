"""Shapes a model cannot take: a sequence longer than its learned positions is an unsupported combination.

A model with absolute position embeddings (BERT, GPT-2) fails with an index error past its
``max_position_embeddings``; one with rotary or relative positions runs on. So nothing is refused in
advance: :func:`shape_guard` turns a failure of a call whose sequence exceeds the model's positions into
a :class:`~accelerate_core.errors.ModelBuildError` starting with :data:`SHAPE_UNSUPPORTED`, which a job
records as a ``skipped`` row (``unsupported``) with that reason, not a failure.

A model whose input has no sequence axis (a ViT's ``pixel_values``, a wav2vec2's ``input_values``) takes the same
input at every sequence length: :func:`has_sequence_axis` says so from its modality and main input, so a run over
several ``--seq`` measures it once and records the other lengths ``skipped`` with :data:`SEQ_NOT_APPLICABLE`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from accelerate_core.errors import ModelBuildError

__all__ = [
    "SEQ_NOT_APPLICABLE",
    "SHAPE_UNSUPPORTED",
    "has_sequence_axis",
    "input_shapes",
    "max_positions",
    "shape_guard",
]

SHAPE_UNSUPPORTED: Final = "shape is not supported by"
"""The start of the message of a shape a model cannot take (a ``skipped`` row)."""

SEQ_NOT_APPLICABLE: Final = "sequence length does not apply to"
"""The start of the reason of a ``--seq`` row of a model whose input has no sequence axis (a ``skipped`` row)."""

SEQUENCE_MODALITIES: Final = frozenset({"text", "multimodal"})
"""Modalities whose models read tokens: every sequence length is another input."""

NO_SEQUENCE_INPUTS: Final = frozenset({
    "pixel_values", "pixel_values_videos", "flattened_patches", "input_values", "input_features", "spectrogram",
    "audio_mel", "past_values",
})  # fmt: skip
"""Main inputs the catalog builds at a fixed size whatever the sequence length (images, video, audio, a time-series
window: ``accelerate_core.catalog.inputs.generic``)."""

_POSITION_KEYS: Final = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len")
"""Config keys that bound the sequence length, most common first."""


def max_positions(model: Any) -> int | None:
    """The longest sequence ``model``'s config declares (its text config's for a composite), None if none."""
    config = getattr(model, "config", None)
    for candidate in (config, getattr(config, "text_config", None)):
        for key in _POSITION_KEYS:
            value = getattr(candidate, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def has_sequence_axis(modality: str, main_input: str | list[str] | None) -> bool:
    """False when a model of ``modality`` whose forward leads with ``main_input`` takes the same input at every
    sequence length (a vision, video, audio or time-series model fed images, audio or a window); True otherwise,
    and when the main input is not known."""
    first = main_input[0] if isinstance(main_input, list) and main_input else main_input
    return modality in SEQUENCE_MODALITIES or first not in NO_SEQUENCE_INPUTS


def input_shapes(value: Any) -> Any:
    """A hashable picture of an input's shapes (tensors by shape, containers by item, the rest by type): two
    sequence lengths whose inputs have the same picture feed the model the same input."""
    if hasattr(value, "shape"):
        return tuple(value.shape)
    if isinstance(value, dict):
        return tuple((key, input_shapes(item)) for key, item in sorted(value.items()))
    if isinstance(value, list | tuple):
        return tuple(input_shapes(item) for item in value)
    return type(value).__name__


@contextmanager
def shape_guard(model: Any, batch_size: int, seq_len: int) -> Iterator[None]:
    """Run a call of ``model`` at ``batch_size`` x ``seq_len``; a failure past its positions is unsupported.

    Raises:
        ModelBuildError: the call failed and ``seq_len`` exceeds :func:`max_positions` (other errors pass as is).
    """
    try:
        yield
    except Exception as e:
        limit = max_positions(model)
        if limit is None or seq_len <= limit:
            raise
        first = (str(e).splitlines() or [""])[0][:200]
        raise ModelBuildError(
            f"{SHAPE_UNSUPPORTED} {type(model).__name__}: batch {batch_size} x seq {seq_len} exceeds its {limit} "
            f"positions ({type(e).__name__}: {first})"
        ) from e
