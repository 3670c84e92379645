"""Which model class to build for a model type, and what kind of model it is (modality, family).

Resolution order: the exceptions table's ``model_class``; the task mapping that fits the family
(causal LM for decoders, seq2seq LM for encoder-decoders, image-text-to-text for multimodal
generators); the base ``AutoModel`` mapping; any other ``MODEL_FOR_*`` mapping; finally a search of
the type's own modeling module for a model class whose ``config_class`` is the type's config class.
Only mapping *names* are read here; :func:`load_class` imports the class.
"""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from typing import Any

_MAPPING_PREFERENCE = (
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
    "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_MAPPING_NAMES",
)
_GENERATIVE_MAPPINGS = frozenset(_MAPPING_PREFERENCE[:4])
_MODALITY_BY_MAPPING = (
    ("VIDEO", "video"),
    ("TIME_SERIES", "time-series"),
    ("AUDIO", "audio"),
    ("CTC", "audio"),
    ("SPEECH", "audio"),
    ("TEXT_TO_WAVEFORM", "audio"),
    ("TEXT_TO_SPECTROGRAM", "audio"),
    ("RNNT", "audio"),
    ("TDT", "audio"),
    ("IMAGE_TEXT", "multimodal"),
    ("VISUAL_QUESTION", "multimodal"),
    ("MULTIMODAL", "multimodal"),
    ("ZERO_SHOT", "multimodal"),
    ("DOCUMENT", "multimodal"),
    ("RETRIEVAL", "multimodal"),
    ("IMAGE", "vision"),
    ("BACKBONE", "vision"),
    ("DEPTH", "vision"),
    ("SEGMENTATION", "vision"),
    ("OBJECT_DETECTION", "vision"),
    ("KEYPOINT", "vision"),
    ("POSE", "vision"),
    ("NORMAL", "vision"),
    ("POINTMAP", "vision"),
    ("MASK_GENERATION", "vision"),
    ("TABLE_RECOGNITION", "vision"),
    ("TEXT_RECOGNITION", "vision"),
)


_TEXT_MAPPINGS = frozenset(
    {
        "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    }
)


@lru_cache(maxsize=1)
def mappings() -> dict[str, dict[str, str]]:
    """Every ``MODEL_*_MAPPING_NAMES`` of transformers: mapping name -> {model_type: class name}."""
    from transformers.models.auto import modeling_auto

    out: dict[str, dict[str, str]] = {}
    for name in dir(modeling_auto):
        if name.startswith("MODEL_") and name.endswith("_MAPPING_NAMES"):
            table = getattr(modeling_auto, name)
            out[name] = {k: (v[0] if isinstance(v, list | tuple) else v) for k, v in table.items()}
    return out


def mappings_of(model_type: str) -> list[str]:
    """The names of the mappings that list ``model_type``."""
    return sorted(name for name, table in mappings().items() if model_type in table)


def modality_of(model_type: str, config: dict[str, Any]) -> str:
    """The modality, from the mappings that list the type and the sub-configs it carries."""
    names = mappings_of(model_type)
    subs = {k for k, v in config.items() if isinstance(v, dict) and k.endswith("_config")}
    has_text = "text_config" in subs or "input_ids" in str(config.get("model_input_names", ""))
    if any(k in subs for k in ("vision_config", "audio_config", "speech_config")) and has_text:
        return "multimodal"
    for token, modality in _MODALITY_BY_MAPPING:
        if any(token in n for n in names):
            return modality
    if any(n in names for n in _TEXT_MAPPINGS):
        return "text"
    return _modality_by_name(model_type) or _modality_by_config(config, subs)


def _modality_by_name(model_type: str) -> str | None:
    """A sub-model's modality from its name (``*_vision_*``, ``*_audio_*``, ``*_video_*``)."""
    for token, modality in (("video", "video"), ("vision", "vision"), ("audio", "audio"), ("speech", "audio")):
        if token in model_type:
            return modality
    return None


def _modality_by_config(config: dict[str, Any], subs: set[str]) -> str:
    if "prediction_length" in config or "num_time_features" in config:
        return "time-series"
    if "vision_config" in subs or "num_channels" in config or "image_size" in config:
        return "vision"
    if "num_mel_bins" in config or "feature_size" in config or "sampling_rate" in config:
        return "audio"
    return "text"


def family_of(model_type: str, config: dict[str, Any]) -> str:
    """``encoder-decoder``, ``decoder`` or ``encoder``."""
    names = mappings_of(model_type)
    if config.get("is_encoder_decoder") or any("SEQ_2_SEQ" in n or "SEQ_TO_SEQ" in n for n in names):
        return "encoder-decoder"
    generative = {"MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"}
    if generative & set(names) and "MODEL_FOR_MASKED_LM_MAPPING_NAMES" not in names:
        return "decoder"
    return "encoder"


def _module_of(config_class: type) -> str:
    return config_class.__module__.replace(".configuration_", ".modeling_")


def _modeling_modules(config_class: type) -> list[Any]:
    """The type's own modeling module first, then every other ``modeling_*`` module of its package."""
    import pkgutil

    own = _module_of(config_class)
    package = own.rsplit(".", 1)[0]
    names = [own]
    try:
        pkg = importlib.import_module(package)
        names += sorted(
            f"{package}.{m.name}"
            for m in pkgutil.iter_modules(pkg.__path__)
            if m.name.startswith("modeling_") and f"{package}.{m.name}" != own
        )
    except ImportError:
        pass
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    return modules


def _search_module(config_class: type) -> str | None:
    """A model class in the type's modeling modules whose ``config_class`` is ``config_class``."""
    for module in _modeling_modules(config_class):
        found = [
            obj.__name__
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and getattr(obj, "config_class", None) is config_class
            and obj.__module__ == module.__name__
            and not obj.__name__.endswith("PreTrainedModel")
            and hasattr(obj, "forward")
        ]
        if found:
            found.sort(key=lambda n: (not n.endswith("Model"), "For" in n, len(n)))
            return found[0]
    return None


def resolve_class_name(model_type: str, family: str, config_class: type) -> str | None:
    """The name of the class to build for ``model_type``, or None when none exists."""
    maps = mappings()
    order = list(_MAPPING_PREFERENCE)
    if family == "encoder":
        order.remove("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
        order.append("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    for name in order:
        if model_type in maps[name]:
            return maps[name][model_type]
    for name in sorted(maps):
        if model_type in maps[name]:
            return maps[name][model_type]
    return _search_module(config_class)


def is_generative_class(model_type: str, class_name: str | None) -> bool:
    """True when the class comes from a generative mapping (causal/seq2seq/image-text-to-text LM)."""
    return class_name is not None and any(mappings()[m].get(model_type) == class_name for m in _GENERATIVE_MAPPINGS)


def load_class(class_name: str, config_class: type) -> type:
    """Import the model class ``class_name`` (from transformers, else from the type's modeling module)."""
    import transformers

    cls = getattr(transformers, class_name, None)
    if cls is None:
        for module in _modeling_modules(config_class):
            cls = getattr(module, class_name, None)
            if cls is not None:
                break
    if not isinstance(cls, type):
        raise TypeError(f"{class_name} is not a class")
    return cls
