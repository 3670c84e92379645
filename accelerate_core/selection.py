"""Which models a command covers: the one parser of ``--models`` and the one pick from the catalog.

Every command that takes ``--models`` (``accel run``, ``accel generate``, ``accel models check``) or the
TOML ``models`` key selects with :func:`select_models`, so ``all``, ``a,b`` and ``@file`` mean the same
everywhere:

- ``all`` (any case): every type of the catalog;
- ``a,b``: those models, in that order, duplicates dropped;
- ``@file``: the models in a text file, one or more a line (commas also separate), ``#`` starts a comment.

Each name is a model type, a checkpoint directory or a hub id in the local Hugging Face cache
(:mod:`accelerate_core.sources`), mixed freely. A name that is none of these, an empty selection or an
unreadable file is one line of error that names where the selection came from (``--models`` or
``accel.toml: models``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from accelerate_core.constants import ERR_NOT_IN_CACHE, ERR_UNSUPPORTED, SOURCE_TYPE
from accelerate_core.contracts import ModelSource, SkipReason
from accelerate_core.errors import ConfigError, UnknownModelError
from accelerate_core.sources import fetch_command, resolve_sources, type_source

if TYPE_CHECKING:
    from accelerate_core.config import Settings

__all__ = ["MODELS_FLAG", "RunnableEntry", "Target", "models_spec", "parse_models", "select_entries", "select_models"]

MODELS_FLAG = "--models"
"""Where a selection given on the command line came from (how its errors name it)."""


class _Entry(Protocol):
    """What a selection needs of a catalog entry."""

    @property
    def model_type(self) -> str: ...

    @property
    def modality(self) -> str: ...


class RunnableEntry(_Entry, Protocol):
    """What a target needs of a catalog entry: whether the catalog can build it, and why not."""

    @property
    def runnable(self) -> bool: ...

    @property
    def reason_class(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...


E = TypeVar("E", bound=_Entry)
R = TypeVar("R", bound=RunnableEntry)


@dataclass(frozen=True, slots=True)
class Target(Generic[R]):
    """One selected model: its source and its catalog entry (None: a hub id not in the cache, or a checkpoint
    of a model type this transformers does not have)."""

    source: ModelSource
    entry: R | None

    def skip(self) -> SkipReason | None:
        """Why this model cannot be built here (None: it can): not in the cache, an unknown type, or a type the
        catalog marks not runnable (a checkpoint of it is still tried: its own config may build)."""
        source, entry = self.source, self.entry
        if not source.available:
            why = f"{source.ref} is not in the local Hugging Face cache: fetch it with `{fetch_command(source.ref)}`"
            return SkipReason(ERR_NOT_IN_CACHE, why)
        if entry is None:
            why = f"{source.ref}: model type {source.model_type!r} is not in this transformers"
            return SkipReason(ERR_UNSUPPORTED, why)
        if not entry.runnable and source.kind == SOURCE_TYPE:
            return SkipReason(entry.reason_class or ERR_UNSUPPORTED, entry.reason)
        return None


def models_spec(given: str | None, settings: Settings) -> tuple[str, str]:
    """The selection a command covers and where it came from: ``--models``, else the settings' ``models``
    (TOML ``models`` key or ``ACCEL_MODELS``), else ``all``.

    Returns:
        ``(spec, where)``: the spec for :func:`select_models` and how its errors name it.
    """
    if given is not None:
        return given, MODELS_FLAG
    if settings.models is None:
        return "all", MODELS_FLAG
    source = settings.sources.get("models")
    where = "models" if source is None else f"{source.name}: models" if source.kind == "file" else source.name
    return settings.models, where


@contextmanager
def _named(where: str) -> Iterator[None]:
    """Prefix a selection error with where the selection came from (``--models``, ``accel.toml: models``)."""
    try:
        yield
    except (ConfigError, UnknownModelError) as e:
        raise type(e)(f"{where}: {e}") from None


def select_models(
    index: Sequence[R],
    spec: str,
    modality: str | None = None,
    *,
    where: str = MODELS_FLAG,
    base_dir: Path | None = None,
) -> list[Target[R]]:
    """The models ``spec`` selects: every catalog type for ``all``, else each name resolved to its source.

    Args:
        index: the catalog index.
        spec: ``all``, ``a,b`` or ``@file`` (see the module docstring).
        modality: keep only models of this modality (a checkpoint of an unknown type is kept).
        where: how errors name the selection (``--models``, ``accel.toml: models``).
        base_dir: where a relative ``@file`` is read from (default: the working directory).

    Raises:
        UnknownModelError: a name is no model type, checkpoint directory or hub id.
        ConfigError: the modality is unknown, the file cannot be read, or the selection is empty.
    """
    if modality is not None:
        select_entries(index, None, modality)  # an unknown modality is one line
    with _named(where):
        names = parse_models(spec, base_dir=base_dir)
        if names is None:
            return [Target(type_source(e.model_type), e) for e in select_entries(index, None, modality)]
        by_type = {e.model_type: e for e in index}
        targets = []
        for source in resolve_sources(names, by_type):
            entry = by_type.get(source.model_type)
            if modality is None or entry is None or entry.modality == modality:
                targets.append(Target(source, entry))
        if not targets:
            raise ConfigError(f"the model selection {spec!r} is empty: widen it or --modality")
        return targets


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
        raise ConfigError(f"{spec!r} names no model: give all, a,b or @file")
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
