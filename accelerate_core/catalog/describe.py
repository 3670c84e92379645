"""Describing one model type: its default config, tiny config and :class:`IndexEntry` (imports transformers).

This is the single code path behind both the cached index (``build_index``) and the live
``catalog.entry`` / ``catalog.tiny_config_dict`` calls, so they always agree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from accelerate_core.catalog.classes import family_of, is_generative_class, modality_of, resolve_class_name
from accelerate_core.catalog.components import find_parent, holders
from accelerate_core.catalog.index import IndexEntry
from accelerate_core.catalog.overrides import Override, deep_merge, override_for
from accelerate_core.catalog.shrink import fix_derived, shrink_config
from accelerate_core.errors import ModelBuildError, UnknownModelError

logger = logging.getLogger(__name__)


def all_model_types() -> list[str]:
    """Every model type of ``CONFIG_MAPPING`` of the installed transformers, sorted."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # type: ignore[attr-defined]

    return sorted(CONFIG_MAPPING_NAMES)


def config_class(model_type: str) -> type:
    """The config class of ``model_type``; raises UnknownModelError for a type transformers lacks."""
    from transformers.models.auto.configuration_auto import (  # type: ignore[attr-defined]
        CONFIG_MAPPING,
        CONFIG_MAPPING_NAMES,
    )

    if model_type not in CONFIG_MAPPING_NAMES:
        close = [t for t in CONFIG_MAPPING_NAMES if model_type.lower() in t][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownModelError(
            f"unknown model type {model_type!r}{hint}: see `accel models list` for the installed ones"
        )
    cls: type = CONFIG_MAPPING[model_type]
    return cls


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return out


@lru_cache(maxsize=1024)
def default_config_dict(model_type: str) -> dict[str, Any]:
    """The default config of ``model_type`` as a JSON-able dict (raises ModelBuildError if it cannot be made)."""
    cls = config_class(model_type)
    try:
        return _jsonable(cls().to_dict())
    except Exception as e:
        raise ModelBuildError(f"{model_type}: the default {cls.__name__} cannot be built: {e}") from e


def make_config(model_type: str, config_dict: dict[str, Any]) -> Any:
    """A config object of ``model_type`` from a (tiny) config dict; ModelBuildError on an invalid one."""
    cls: Any = config_class(model_type)
    data = {k: v for k, v in config_dict.items() if k not in ("transformers_version",)}
    try:
        return cls.from_dict(data)
    except Exception as e:
        raise ModelBuildError(f"{model_type}: the tiny {cls.__name__} is invalid: {type(e).__name__}: {e}") from e


def _with_start_token(config: dict[str, Any]) -> dict[str, Any]:
    """An encoder-decoder generates from ``decoder_start_token_id``: use the pad id (or 0) when unset."""
    if config.get("is_encoder_decoder") and config.get("decoder_start_token_id") is None:
        pad = config.get("pad_token_id")
        return {**config, "decoder_start_token_id": pad if isinstance(pad, int) else 0}
    return config


def reads_mrope(model_type: str) -> bool:
    """True when the type's modeling code reads ``mrope_section`` (it then needs one that fits the tiny size)."""
    import importlib.util

    module = config_class(model_type).__module__.replace(".configuration_", ".modeling_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    with open(spec.origin, encoding="utf-8") as f:
        return "mrope_section" in f.read()


def _drop(config: dict[str, Any], path: str) -> None:
    """Remove the key at a dotted ``path`` (``text_config.head_dim``) from a config dict, if it is there."""
    *parents, key = path.split(".")
    node: Any = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(key, None)


@lru_cache(maxsize=1024)
def _tiny(model_type: str) -> dict[str, Any]:
    ov = override_for(model_type)
    shrunk = shrink_config(default_config_dict(model_type), keep=ov.keep, profile=ov.shrink or "tiny")
    for path in ov.derived:  # the config class derives these from the tiny sizes
        _drop(shrunk, path)
    merged = _with_start_token(deep_merge(shrunk, ov.config))
    # Round trip through the config class: validates, and fills derived fields consistently.
    tiny = _jsonable(make_config(model_type, merged).to_dict())
    if fix_derived(tiny, mrope=reads_mrope(model_type)):
        tiny = _jsonable(make_config(model_type, tiny).to_dict())
    return tiny


def tiny_config_dict(model_type: str) -> dict[str, Any]:
    """The shrunk config of ``model_type`` (JSON-able; a fresh copy each call)."""
    return json.loads(json.dumps(_tiny(model_type)))  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _holders() -> dict[str, list[str]]:
    """Sub-config model type -> the types whose default config holds it."""

    def configs() -> Iterator[tuple[str, dict[str, Any]]]:
        for model_type in all_model_types():
            try:
                yield model_type, default_config_dict(model_type)
            except ModelBuildError:
                continue

    return holders(configs())


def _own_runnable(model_type: str) -> bool:
    """True when a type has a class and no table entry that skips it or makes it a component."""
    ov = override_for(model_type)
    if ov.skip or ov.component_of:
        return False
    try:
        family = ov.family or family_of(model_type, default_config_dict(model_type))
    except ModelBuildError:
        return False
    return (ov.model_class or resolve_class_name(model_type, family, config_class(model_type))) is not None


def _skip_fields(ov: Override, class_name: str | None) -> tuple[bool, str | None, str | None, str | None]:
    """(runnable, reason class, reason, tested through) of a type."""
    if ov.skip:
        return False, ov.skip, ov.reason, None
    if not ov.component_of and class_name is not None:
        return True, None, None, None
    parent = ov.component_of or find_parent(ov.model_type, _holders().get(ov.model_type, []), _own_runnable)
    why = ov.reason or "no model class of its own: a sub-configuration used inside a composite model"
    return False, "component", why if parent else f"{why}; no type holds it", parent


@lru_cache(maxsize=1024)
def describe(model_type: str) -> IndexEntry:
    """The :class:`IndexEntry` of ``model_type``, computed from the installed transformers."""
    ov = override_for(model_type)
    cls = config_class(model_type)
    try:
        cfg = default_config_dict(model_type)
    except ModelBuildError:
        cfg = {}
    family = ov.family or family_of(model_type, cfg)
    class_name = ov.model_class or resolve_class_name(model_type, family, cls)
    runnable, reason_class, reason, parent = _skip_fields(ov, class_name)
    generative = is_generative_class(model_type, class_name) and ov.generate is not False
    return IndexEntry(
        model_type=model_type,
        modality=ov.modality or modality_of(model_type, cfg),
        family=family,
        model_class=class_name,
        config_class=cls.__name__,
        runnable=runnable,
        reason_class=reason_class,
        reason=reason,
        needs=list(ov.needs),
        generative=generative,
        tested_through=parent,
    )
