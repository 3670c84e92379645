"""Rendering facts for the test templates: :func:`template_context`, cheap enough for every type.

Reads the cached index (entries, tiny configs, main input names) when it is there, so rendering all
822 architectures costs no model build.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from accelerate_core.catalog.index import IndexEntry, load_extras, load_index


@lru_cache(maxsize=1)
def _cached() -> tuple[dict[str, IndexEntry], dict[str, dict[str, Any]]]:
    return {e.model_type: e for e in load_index()}, load_extras()


def input_names(main_input_name: str, family: str, generative: bool) -> list[str]:
    """The usual input names of a model with this main input (informational; builders decide)."""
    names = [main_input_name]
    if main_input_name == "input_ids":
        names.append("attention_mask")
    if family == "encoder-decoder" and main_input_name != "past_values":
        names.append("decoder_input_ids")
    return names


def template_context(model_type: str, hardware: str = "cpu") -> dict[str, Any]:
    """JSON-able facts to render ``model_type``'s test for ``hardware``.

    Keys: model_type, hardware, modality, family, model_class, config_class, config (tiny config dict),
    generative, main_input_name, input_names, runnable, reason_class, reason, needs, param_count.
    """
    from accelerate_core.catalog.index import find

    entries, extras = _cached()
    info = find(list(entries.values()), model_type) if model_type not in entries else entries[model_type]
    extra = extras.get(model_type, {})
    main = extra.get("main_input_name") or "input_ids"
    if isinstance(main, list):  # a few models name several main inputs; the first leads
        main = main[0] if main else "input_ids"
    ctx = info.to_dict()
    ctx.update(
        hardware=hardware,
        config=extra.get("config", {}),
        main_input_name=main,
        input_names=input_names(main, info.family, info.generative),
    )
    return ctx
