"""Hand-made render contexts for template tests that must not import transformers (fast unit tests).

They have the keys of ``accelerate_core.catalog.template_context`` that the shipped template uses;
the integration tests use the real catalog.
"""

from __future__ import annotations

from typing import Any

from templates_db.context import extend_context

_BERT = {
    "model_type": "bert",
    "modality": "text",
    "family": "encoder",
    "model_class": "BertModel",
    "config_class": "BertConfig",
    "config": {
        "vocab_size": 1024,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "is_decoder": False,
        "pad_token_id": 0,
        "classifier_dropout": None,
        "layer_norm_eps": 1e-12,
    },
    "generative": False,
    "main_input_name": "input_ids",
    "input_names": ["input_ids", "attention_mask"],
    "runnable": True,
    "reason": None,
}
_GPT2 = {
    **_BERT,
    "model_type": "gpt2",
    "family": "decoder",
    "model_class": "GPT2LMHeadModel",
    "config_class": "GPT2Config",
    "config": {"vocab_size": 1024, "n_embd": 32, "n_layer": 2, "n_head": 4, "use_cache": True, "bos_token_id": 1},
    "generative": True,
}
_VIT = {
    **_BERT,
    "model_type": "vit",
    "modality": "vision",
    "model_class": "ViTModel",
    "config_class": "ViTConfig",
    "config": {"hidden_size": 32, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8, "qkv_bias": True},
    "main_input_name": "pixel_values",
    "input_names": ["pixel_values"],
}
_WAV2VEC2 = {
    **_BERT,
    "model_type": "wav2vec2",
    "modality": "audio",
    "model_class": "Wav2Vec2Model",
    "config_class": "Wav2Vec2Config",
    "config": {"hidden_size": 32, "num_hidden_layers": 2, "conv_dim": [32, 32], "mask_time_prob": 0.05},
    "main_input_name": "input_values",
    "input_names": ["input_values"],
}
FACTS = {f["model_type"]: f for f in (_BERT, _GPT2, _VIT, _WAV2VEC2)}


def contexts(hardware: str = "cpu") -> list[dict[str, Any]]:
    """The four sample contexts (text encoder, generative decoder, vision, audio) on ``hardware``."""
    return [extend_context(f, hardware) for f in FACTS.values()]
