"""Shapes a model cannot take: a sequence longer than its learned positions is an unsupported combination.

A model with absolute position embeddings (BERT, GPT-2) fails with an index error past its
``max_position_embeddings``; one with rotary or relative positions runs on. So nothing is refused in
advance: :func:`shape_guard` turns a failure of a call whose sequence exceeds the model's positions into
a :class:`~accelerate_core.errors.ModelBuildError` starting with :data:`SHAPE_UNSUPPORTED`, which a job
records as a ``skipped`` row (``unsupported``) with that reason, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from accelerate_core.errors import ModelBuildError

__all__ = ["SHAPE_UNSUPPORTED", "max_positions", "shape_guard"]

SHAPE_UNSUPPORTED: Final = "shape is not supported by"
"""The start of the message of a shape a model cannot take (a ``skipped`` row)."""

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
