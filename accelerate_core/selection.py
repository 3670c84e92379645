"""Which model types a command covers: the one parser of ``--models`` and the one pick from the catalog.

Every command that takes ``--models`` (``accel run``, ``accel generate``, ``accel models check``)
parses it here, so ``all``, ``a,b`` and ``@file`` mean the same everywhere:

- ``all`` (any case): every type of the catalog;
- ``a,b``: those types, in that order, duplicates dropped;
- ``@file``: the types in a text file, one or more a line (commas also separate), ``#`` starts a comment.

A name that is not in the catalog, an empty selection or an unreadable file is one line of error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from accelerate_core.errors import ConfigError, UnknownModelError

__all__ = ["parse_models", "select_entries"]


class _Entry(Protocol):
    """What a selection needs of a catalog entry."""

    @property
    def model_type(self) -> str: ...

    @property
    def modality(self) -> str: ...


E = TypeVar("E", bound=_Entry)


def parse_models(spec: str, *, base_dir: Path | None = None) -> list[str] | None:
    """Parse ``--models``: ``all`` -> None; ``a,b`` -> names; ``@file`` -> the names in the file.

    Args:
        spec: the option's value.
        base_dir: where a relative ``@file`` path is looked up (default: the working directory).

    Returns:
        The names in order of appearance, without duplicates; None for every type.

    Raises:
        ConfigError: the spec names no model, or the file cannot be read.
    """
    text = spec.strip()
    if text.lower() == "all":
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path, or not UTF-8 (a subclass)
            reason = (
                e.strerror if isinstance(e, OSError) else "not UTF-8 text" if isinstance(e, UnicodeError) else str(e)
            )
            raise ConfigError(f"models file {path} cannot be read ({reason}): check the @file path") from e
    names = [name.strip() for line in text.splitlines() for name in line.split("#", 1)[0].split(",")]
    chosen = list(dict.fromkeys(name for name in names if name))
    if not chosen:
        raise ConfigError(f"--models {spec!r} names no model: give all, a,b or @file")
    return chosen


def select_entries(index: Sequence[E], names: Sequence[str] | None, modality: str | None = None) -> list[E]:
    """The entries named (all when ``names`` is None), in the order named, optionally of one modality.

    Raises:
        UnknownModelError: a name is not in the catalog.
        ConfigError: the modality is unknown, or the selection is empty.
    """
    by_type = {e.model_type: e for e in index}
    if names is None:
        chosen = list(index)
    else:
        unknown = [n for n in names if n not in by_type]
        if unknown:
            raise UnknownModelError(
                f"unknown model type(s) {', '.join(unknown)}: see `accel models list` for the installed ones"
            )
        chosen = [by_type[n] for n in names]
    if modality is not None:
        known = sorted({e.modality for e in index})
        if modality not in known:
            raise ConfigError(f"modality {modality!r} is unknown: use one of {', '.join(known)}")
        chosen = [e for e in chosen if e.modality == modality]
    if not chosen:
        raise ConfigError("the model selection is empty: widen --models or --modality")
    return chosen
