"""The light catalog index: one :class:`IndexEntry` per model type, read from a cached JSON file.

Importing this module (and calling :func:`load_index`) never imports torch or transformers in the
caller: the index is built once per installed transformers version by
``python -m accelerate_core.catalog.build_index`` in a subprocess and cached as
``accel-data/catalog-<transformers version>.json``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from accelerate_core.errors import ConfigError, ModelBuildError, UnknownModelError

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("accel-data")
"""Where the index JSON is cached when no directory is given (relative to the working directory)."""

INDEX_FORMAT = 1
"""Bumped when the JSON layout changes, so an old cache is rebuilt."""

MODALITIES = ("text", "vision", "audio", "video", "multimodal", "time-series", "other")
"""Every modality an entry may carry."""

FAMILIES = ("encoder", "decoder", "encoder-decoder")
"""Every family an entry may carry."""

REASON_CLASSES = (
    "missing-dependency",
    "component",
    "no-forward",
    "needs-special-inputs",
    "needs-real-weights",
    "needs-tokenizer-file",
    "tiny-config-unsupported",
    "upstream-bug",
    "too-large",
)
"""Why an architecture is not runnable from a tiny config (never "unknown"): an optional library is
missing; it is a component tested through its parent; its class has no forward (a codebook or a
generation-only wrapper); its forward needs inputs no builder makes (a tracking session, a retriever);
it needs real weights or a tokenizer file; the tiny config cannot be made consistent; the default
config itself is invalid upstream; it is too large for a tiny check."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Static facts about one model type of the installed transformers."""

    model_type: str
    modality: str
    family: str
    model_class: str | None
    config_class: str
    runnable: bool
    reason_class: str | None = None
    reason: str | None = None
    needs: list[str] = field(default_factory=list)
    generative: bool = False
    param_count: int | None = None
    tested_through: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Read back :meth:`to_dict` output (unknown keys are ignored, missing required ones raise)."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:
            raise ConfigError(f"catalog index entry is malformed ({e}): delete the cached index to rebuild it") from e


def transformers_version() -> str:
    """The installed transformers version, read from package metadata (no import)."""
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError as e:
        raise ModelBuildError("transformers is not installed: pip install 'transformers>=5'") from e


def fingerprint() -> str:
    """A short hash of the catalog's code and exceptions table: a cached index built by other code is stale."""
    import hashlib

    digest = hashlib.sha1()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(__file__).with_name("exceptions.toml")]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def index_path(cache_dir: Path | None = None) -> Path:
    """The cache file of the index for the installed transformers version."""
    base = cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR
    return base / f"catalog-{transformers_version()}.json"


def _read(path: Path, *, fresh_only: bool = True) -> list[IndexEntry] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return None
    if fresh_only and data.get("fingerprint") != fingerprint():
        return None
    return [IndexEntry.from_dict(d) for d in data["entries"]]


def build_index_file(path: Path, *, timeout_s: float = 600.0) -> None:
    """Run the index builder in a subprocess (it imports transformers) and write ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "accelerate_core.catalog.build_index", "--out", str(path)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    logger.info("building the model catalog index: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise ModelBuildError(f"building the catalog index took over {timeout_s:.0f}s: rerun it") from e
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelBuildError(f"building the catalog index failed ({tail}): run `{' '.join(cmd)}` to see why")


def load_index(cache_dir: Path | None = None, *, rebuild: bool = False) -> list[IndexEntry]:
    """Every model type of the installed transformers, from the cached index (built on first use).

    Args:
        cache_dir: Directory of the cached JSON (default ``accel-data``).
        rebuild: Build the index again even when a cache exists.

    Returns:
        One entry per model type, sorted by model type.
    """
    path = index_path(cache_dir)
    entries = None if rebuild else _read(path)
    if entries is None:
        build_index_file(path)
        # Not fingerprint-checked: the catalog's files may change while the builder runs.
        entries = _read(path, fresh_only=False)
        if entries is None:
            raise ModelBuildError(f"the catalog index {path} is unreadable after a rebuild: delete it and retry")
    return entries


def load_extras(cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-type facts cached next to the index: ``{type: {"config": tiny config dict, "main_input_name": ...}}``."""
    path = index_path(cache_dir)
    if _read(path, fresh_only=False) is None:
        load_index(cache_dir)
    data = json.loads(path.read_text())
    extras: dict[str, dict[str, Any]] = data.get("extras", {})
    return extras


def find(entries: list[IndexEntry], model_type: str) -> IndexEntry:
    """The entry of ``model_type``; raises UnknownModelError naming close matches."""
    for e in entries:
        if e.model_type == model_type:
            return e
    close = [e.model_type for e in entries if model_type.lower() in e.model_type][:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownModelError(f"unknown model type {model_type!r}{hint}: see `accel models list` for the installed ones")
