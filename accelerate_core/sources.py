"""Model sources: what a name in ``--models`` (or ``accel bench``, ``@file``, TOML) refers to.

Three kinds, told apart in this order:

- ``type``: a model type of the installed transformers (``bert``), built from its config with random weights;
- ``dir``: a local checkpoint directory written by ``save_pretrained`` (``config.json`` + safetensors);
  a path is anything with a ``/`` or starting with ``.`` or ``~`` that is not a hub id found in the cache;
- ``hub``: a Hugging Face hub id (``org/name``), resolved **offline** from the local cache
  (``HF_HOME``/``HF_HUB_CACHE``) with ``huggingface_hub.try_to_load_from_cache``: a lookup of files on
  disk, never a network call. Its revision is the snapshot's commit sha (``refs/main`` resolved).

A hub id that is not in the cache is not an error: it becomes a ``skipped`` row with reason class
``not-in-cache`` and the command that would fetch it (:func:`fetch_command`).

Each source has a *label*, a valid name (:mod:`accelerate_core.names`) that names its rows in the store, the
report and the history: the type itself, ``org--name`` for a hub id (the cache's own spelling), and the
directory's name for a directory. Light: no torch, no transformers; huggingface_hub is imported when a hub
id is resolved.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final

from accelerate_core.constants import SOURCE_DIR, SOURCE_HUB, SOURCE_TYPE
from accelerate_core.contracts import ModelSource
from accelerate_core.errors import UnknownModelError
from accelerate_core.names import is_name

__all__ = ["describe_source", "fetch_command", "resolve_source", "resolve_sources", "type_source"]

_HUB_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_CONFIG: Final = "config.json"


def fetch_command(hub_id: str) -> str:
    """The command that puts ``hub_id`` into the local cache (for a ``not-in-cache`` row)."""
    return f"hf download {hub_id}"


def describe_source(source: ModelSource) -> str:
    """``kind:ref@revision`` (the revision cut to 12 characters): how reports name a source."""
    revision = f"@{source.revision[:12]}" if source.revision else ""
    return f"{source.kind}:{source.ref}{revision}"


def type_source(model_type: str) -> ModelSource:
    """The source of a model type of the catalog: its rows carry the type's name."""
    return ModelSource(SOURCE_TYPE, model_type, model_type, model_type)


def resolve_sources(names: Sequence[str], model_types: Collection[str]) -> list[ModelSource]:
    """Resolve each name to its source (see the module docstring), labels made unique in order.

    Args:
        names: the names as given (``bert``, ``./ckpt``, ``org/name``).
        model_types: every model type the catalog knows.

    Raises:
        UnknownModelError: a name that is none of the three (one line naming it and what to give).
    """
    sources: list[ModelSource] = []
    taken: set[str] = set()
    for name in names:
        source = resolve_source(name, model_types)
        label, n = source.label, 2
        while label in taken:
            label, n = f"{source.label}-{n}", n + 1
        taken.add(label)
        sources.append(source if label == source.label else _relabelled(source, label))
    return sources


def _relabelled(source: ModelSource, label: str) -> ModelSource:
    return ModelSource(source.kind, source.ref, source.model_type, label, source.revision, source.path)


def resolve_source(name: str, model_types: Collection[str] | None) -> ModelSource:
    """The source ``name`` refers to.

    Args:
        name: the name as given.
        model_types: every model type the catalog knows; None takes any other valid name for a model type
            (its builder then checks it: ``accel bench`` must not build the catalog index to find out).

    Raises:
        UnknownModelError: not a model type, not a checkpoint directory, not a hub id.
    """
    text = name.strip()
    if model_types is not None and text in model_types:
        return type_source(text)
    path = Path(text).expanduser()
    if (path / _CONFIG).is_file():
        return _directory(text, path)
    if _HUB_ID.fullmatch(text) and not text.startswith((".", "~")):
        return _hub(text)
    if model_types is None and is_name(text):
        return type_source(text)
    if "/" in text or text.startswith((".", "~")):
        what = "has no config.json (give a directory written by save_pretrained)" if path.is_dir() else "does not exist"
        raise UnknownModelError(f"checkpoint directory {text!r} {what}: check the path")
    raise UnknownModelError(
        f"unknown model {text!r}: give a model type (see `accel models list`), a checkpoint directory or a hub id "
        "(org/name) in the local Hugging Face cache"
    )


def _model_type_of(config: Path) -> str:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnknownModelError(f"{config} cannot be read ({e}): give a directory written by save_pretrained") from e
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if not is_name(model_type):
        raise UnknownModelError(f"{config} names no valid model_type: give a directory written by save_pretrained")
    return model_type


def _directory(text: str, path: Path) -> ModelSource:
    folder = path.resolve()
    label = _UNSAFE.sub("-", folder.name).strip("-._") or "checkpoint"
    return ModelSource(SOURCE_DIR, text, _model_type_of(folder / _CONFIG), label, _fingerprint(folder), str(folder))


def _fingerprint(folder: Path) -> str:
    """A short digest of the config and the weight files' names and sizes: a changed checkpoint is not comparable."""
    digest = hashlib.sha256((folder / _CONFIG).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        digest.update(f"{weights.name}\0{weights.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _hub(hub_id: str) -> ModelSource:
    """A hub id resolved from the local cache; ``path``/``revision`` are None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    label = hub_id.replace("/", "--")
    found = try_to_load_from_cache(hub_id, _CONFIG)  # reads the cache folders only: no network
    if not isinstance(found, str):
        return ModelSource(SOURCE_HUB, hub_id, "", label)
    snapshot = Path(found).parent
    return ModelSource(SOURCE_HUB, hub_id, _model_type_of(snapshot / _CONFIG), label, snapshot.name, str(snapshot))
