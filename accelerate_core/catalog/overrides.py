"""The per-architecture exceptions table (``exceptions.toml``), read into typed :class:`Override` records.

The table is the ONE place where an architecture gets special treatment. Code offers generic
mechanisms; the table says which type uses which, and why:

- ``config``: values merged into the tiny config (nested tables reach sub-configs);
- ``keep``: config keys the shrinker must leave at their default;
- ``derived``: config keys (dotted paths reach sub-configs) the config class derives from other sizes
  at construction: dropped from the tiny config, so they are derived from the tiny sizes;
- ``shrink = "depth"``: shrink only depth/experts/vocab/images, keep default widths (linked widths);
- ``model_class``: the class to build instead of the resolved one;
- ``inputs`` / ``input_args``: a named input builder and its arguments; ``extra_inputs``: fixed extra tensors;
- ``drop_inputs``: generic inputs to leave out;
- ``post_build``: methods called on the built model (``{method, args}``);
- ``skip`` (a reason class) and ``needs`` (optional libraries): the type is listed but not runnable;
- ``component_of``: the type is a sub-model tested through its parent;
- ``generate = false``: generation does not work from a tiny config;
- ``allow_nonfinite``: the main output may hold inf/nan by design (masked logits).

``[families.NAME]`` tables carry the same fields plus ``types = [...]``; a type's own table wins.
Every table must have a ``reason``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from accelerate_core.errors import ConfigError

TABLE_PATH = Path(__file__).with_name("exceptions.toml")
"""The shipped exceptions table."""

_FIELDS = frozenset(
    {
        "reason",
        "config",
        "keep",
        "derived",
        "model_class",
        "inputs",
        "input_args",
        "extra_inputs",
        "drop_inputs",
        "post_build",
        "skip",
        "needs",
        "component_of",
        "generate",
        "allow_nonfinite",
        "modality",
        "family",
        "shrink",
        "types",
    }
)


@dataclass(frozen=True)
class Override:
    """The merged exceptions of one model type (empty when the table has none)."""

    model_type: str
    reasons: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    keep: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    model_class: str | None = None
    inputs: str | None = None
    input_args: dict[str, Any] = field(default_factory=dict)
    extra_inputs: dict[str, Any] = field(default_factory=dict)
    drop_inputs: tuple[str, ...] = ()
    post_build: tuple[dict[str, Any], ...] = ()
    skip: str | None = None
    needs: tuple[str, ...] = ()
    component_of: str | None = None
    generate: bool | None = None
    allow_nonfinite: bool = False
    modality: str | None = None
    family: str | None = None
    shrink: str | None = None

    @property
    def reason(self) -> str | None:
        """The reasons of every table that applies, joined."""
        return "; ".join(self.reasons) if self.reasons else None


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, recursing into nested dicts (neither argument is changed).

    A nested dict whose ``model_type`` differs from the one it meets replaces it whole (a swapped
    sub-model, e.g. a ResNet backbone instead of a timm one).
    """
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            kind = current.get("model_type")
            out[key] = deep_merge(current, value) if value.get("model_type", kind) == kind else value
        else:
            out[key] = value
    return out


def _validate(name: str, table: dict[str, Any]) -> None:
    unknown = set(table) - _FIELDS
    if unknown:
        raise ConfigError(f"exceptions table entry {name!r} has unknown fields {sorted(unknown)}: fix {TABLE_PATH}")
    if not isinstance(table.get("reason"), str) or not table["reason"].strip():
        raise ConfigError(f"exceptions table entry {name!r} has no reason: add reason = '...' in {TABLE_PATH}")


def _apply(current: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in table.items():
        if key == "types":
            continue
        if key == "reason":
            merged["reasons"] = (*merged.get("reasons", ()), value)
        elif key in ("config", "input_args", "extra_inputs") and isinstance(value, dict):
            merged[key] = deep_merge(merged.get(key, {}), value)
        elif key in ("keep", "derived", "drop_inputs", "needs", "post_build"):
            merged[key] = (*merged.get(key, ()), *value)
        else:
            merged[key] = value
    return merged


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    """The raw table (validated): ``{"families": {...}, "types": {...}}``."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the exceptions table {path}: {e}") from e
    families = data.get("families", {})
    types = data.get("types", {})
    for name, table in families.items():
        _validate(f"families.{name}", table)
        if not isinstance(table.get("types"), list):
            raise ConfigError(f"exceptions family {name!r} needs types = [...] in {path}")
    for name, table in types.items():
        _validate(f"types.{name}", table)
    return {"families": families, "types": types}


@lru_cache(maxsize=1024)
def override_for(model_type: str) -> Override:
    """The merged exceptions of ``model_type`` (families first, then its own table)."""
    table = load_table()
    merged: dict[str, Any] = {}
    for family in table["families"].values():
        if model_type in family["types"]:
            merged = _apply(merged, family)
    own = table["types"].get(model_type)
    if own is not None:
        merged = _apply(merged, own)
    return Override(model_type=model_type, **merged)


def table_types() -> set[str]:
    """Every model type the table names (in a family or on its own)."""
    table = load_table()
    named = set(table["types"])
    for family in table["families"].values():
        named.update(family["types"])
    return named
