"""Shrinking a default config dict into a tiny one: few layers, small widths, small vocab and images.

Pure dict work (no torch): :func:`shrink_config` walks the config and every nested sub-config
(``*_config`` dicts or dicts with a ``model_type``) and replaces sizes by small ones, keeping the
invariants most architectures rely on (heads divide the width, hybrid models keep one layer of each
distinct layer type, special token ids stay inside the vocabulary, ``mrope_section`` sums to half
the rotary dimension).
"""

from __future__ import annotations

import re
from typing import Any

WIDTH = 32
HEADS = 4
KV_HEADS = 2
HEAD_DIM = WIDTH // HEADS
FFN = 64
LAYERS = 2
EXPERTS = 4
TOP_K = 2
MAX_POSITIONS = 512
VOCAB = 1024
MAX_IMAGE = 224

_WIDTH_KEYS = frozenset(
    {
        "hidden_size",
        "d_model",
        "n_embd",
        "embed_dim",
        "hidden_dim",
        "model_dim",
        "d_embed",
        "embedding_size",
        "word_embed_proj_dim",
        "projection_dim",
        "text_embed_dim",
        "vision_embed_dim",
        "projector_hidden_size",
        "encoder_hidden_size",
        "decoder_hidden_size",
        "n_embed",
        "emb_dim",
        "reassemble_hidden_size",
        "attention_hidden_size",
        "out_hidden_size",
        "projection_size",
    }
)
_LAYER_KEYS = frozenset(
    {
        "num_hidden_layers",
        "num_layers",
        "n_layer",
        "n_layers",
        "encoder_layers",
        "decoder_layers",
        "num_encoder_layers",
        "num_decoder_layers",
        "decoder_num_layers",
        "encoder_num_layers",
        "num_decoder_layer",
        "depth",
        "text_layers",
        "vision_layers",
    }
)
_HEAD_KEYS = frozenset(
    {
        "num_attention_heads",
        "n_head",
        "n_heads",
        "num_heads",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "decoder_num_attention_heads",
        "encoder_num_attention_heads",
        "num_decoder_attention_heads",
        "attention_heads",
    }
)
_KV_KEYS = frozenset({"num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"})
_FFN_KEYS = frozenset(
    {
        "intermediate_size",
        "ffn_dim",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "n_inner",
        "d_ff",
        "ffn_hidden_size",
        "moe_intermediate_size",
        "shared_expert_intermediate_size",
        "decoder_intermediate_size",
        "encoder_intermediate_size",
        "mlp_dim",
        "inner_dim",
        "ff_dim",
        "d_inner",
        "expert_intermediate_size",
        "ffn_intermediate_size",
    }
)
_EXPERT_KEYS = frozenset({"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"})
_TOPK_KEYS = frozenset(
    {
        "num_experts_per_tok",
        "num_experts_per_token",
        "moe_topk",
        "top_k",
        "num_selected_experts",
        "moe_k",
        "top_k_experts",
    }
)
_FIXED = {
    "head_dim": HEAD_DIM,
    "attention_head_dim": HEAD_DIM,
    "kv_channels": HEAD_DIM,
    "rotary_dim": HEAD_DIM // 2,
    "qk_rope_head_dim": HEAD_DIM,
    "qk_nope_head_dim": HEAD_DIM,
    "v_head_dim": HEAD_DIM,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "n_group": 1,
    "num_group": 1,
    "num_expert_group": 1,
    "topk_group": 1,
    "n_shared_experts": 1,
    "num_shared_experts": 1,
    "mamba_n_heads": HEADS,
    "mamba_d_head": 16,
    "mamba_n_groups": 1,
    "mamba_d_state": 16,
    "ssm_state_size": 16,
    "state_size": 16,
    "mamba_d_conv": 4,
    "conv_kernel": 4,
    "time_step_rank": 8,
    "linear_num_key_heads": HEADS,
    "linear_num_value_heads": HEADS,
    "linear_key_head_dim": HEAD_DIM,
    "linear_value_head_dim": HEAD_DIM,
    "n_groups": 1,
    "mamba_d_ssm": 64,
    "linear_head_dim": HEAD_DIM,
    "linear_num_heads": HEADS,
}
_POSITION_KEYS = frozenset({"max_position_embeddings", "n_positions", "max_seq_len", "n_ctx", "seq_length"})
_IMAGE_KEYS = frozenset({"image_size", "img_size"})
_STAGE_WIDTH_KEYS = frozenset({"hidden_sizes", "embed_dims", "dims", "channels", "embedding_dims"})
_STAGE_DEPTH_KEYS = frozenset({"depths", "num_layers_per_stage", "layers_per_stage", "blocks"})
_STAGE_HEAD_KEYS = frozenset({"num_heads", "num_attention_heads", "heads"})
_LAYER_LIST_KEYS = ("layer_types", "layers_block_type", "block_types", "hybrid_override_pattern")


def is_layer_table(value: Any) -> bool:
    """True for a per-layer table: a dict keyed by layer index (``{"07": {...}}``)."""
    return isinstance(value, dict) and bool(value) and all(str(k).isdigit() for k in value)


def is_subconfig(key: str, value: Any) -> bool:
    """True when ``value`` is a nested config dict (``*_config`` or carrying a ``model_type``)."""
    if not isinstance(value, dict) or is_layer_table(value):
        return False  # a per-layer table keyed by layer index, not a sub-config
    return key.endswith("_config") or "model_type" in value


def _token_ids(tree: Any, found: set[int]) -> set[int]:
    """Every special token id in a config tree (``*_token_id(s)``, ``*_token_index``)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if ("token_id" in key or key.endswith("_token_index") or key == "image_token_index") and not isinstance(
                value, dict
            ):
                values = value if isinstance(value, list) else [value]
                found.update(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            elif isinstance(value, dict):
                _token_ids(value, found)
    return found


_LINKED = re.compile(r"(hidden|_dim$|_dims?_|^dim_|_size$|channels|d_model|_groups$)")
_NOT_LINKED = re.compile(r"(vocab|position|image|patch|num_|window|length|sampling|bins|frames|chunk|stride|kernel)")


def _widths(tree: Any, found: set[int]) -> set[int]:
    """Every original model width in a config tree (values of the width keys, above the tiny width)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in _WIDTH_KEYS and isinstance(value, int) and value > WIDTH:
                found.add(value)
            elif isinstance(value, dict):
                _widths(value, found)
    return found


def _stage_map(tree: Any, found: dict[int, int]) -> dict[int, int]:
    """Original -> tiny value of every per-stage width (``hidden_sizes`` and friends) in a config tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in _STAGE_WIDTH_KEYS and isinstance(value, list):
                for old, new in zip(value, _shrink_list(key, value), strict=True):
                    if isinstance(old, int):
                        found.setdefault(old, new)
            elif isinstance(value, dict):
                _stage_map(value, found)
    return found


def _linked_list(key: str, value: list[Any], stages: dict[int, int]) -> list[Any]:
    """A list of sizes that repeats per-stage widths under another name (``encoder_in_channels``), mapped."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if value and ints and _LINKED.search(key) and not _NOT_LINKED.search(key) and all(v in stages for v in value):
        return [stages[v] for v in value]
    return value


def _linked_width(key: str, value: int, widths: set[int]) -> bool:
    """True for a size that merely repeats a model width under another name (``text_hidden_size``, ...)."""
    return value in widths and bool(_LINKED.search(key)) and not _NOT_LINKED.search(key)


def _vocab(original: int, ids: set[int]) -> int:
    inside = [i for i in ids if i < original]
    return min(original, max(VOCAB, max(inside, default=0) + 1))


def _shrink_int(key: str, value: int, cfg: dict[str, Any]) -> int:
    if key in _WIDTH_KEYS:
        return min(value, WIDTH)
    if key in _LAYER_KEYS:
        return min(value, LAYERS)
    if key in _HEAD_KEYS:
        return min(value, HEADS)
    if key in _KV_KEYS:
        heads = next((cfg[k] for k in _HEAD_KEYS if isinstance(cfg.get(k), int)), None)
        return min(value, HEADS) if heads is not None and value >= heads else min(value, KV_HEADS)
    if key in _FFN_KEYS:
        return min(value, FFN)
    if key in _EXPERT_KEYS:
        return min(value, EXPERTS)
    if key in _TOPK_KEYS:
        return min(value, TOP_K)
    if key in _FIXED:
        return min(value, _FIXED[key])
    if key in _POSITION_KEYS:
        return min(value, MAX_POSITIONS)
    if key in _IMAGE_KEYS:
        return min(value, MAX_IMAGE)
    return value


def _shrink_list(key: str, value: list[Any]) -> list[Any]:
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    if key in _STAGE_DEPTH_KEYS:
        return [min(v, 1) for v in value]
    if key in _STAGE_WIDTH_KEYS:
        return [min(v, 16 * 2**i) for i, v in enumerate(value)]
    if key in _STAGE_HEAD_KEYS:
        return [min(v, 2 ** min(i, 2)) for i, v in enumerate(value)]
    if key in _FFN_KEYS:
        return [min(v, FFN) for v in value]
    if key in _IMAGE_KEYS:
        return [min(v, MAX_IMAGE) for v in value]
    return value


def _layer_plan(cfg: dict[str, Any], old_layers: int) -> list[int] | None:
    """Which original layer indices to keep: one of each distinct layer type, at least LAYERS."""
    for key in _LAYER_LIST_KEYS:
        kinds = cfg.get(key)
        if isinstance(kinds, list | str) and len(kinds) == old_layers and old_layers > 0:
            keep: list[int] = []
            seen: set[Any] = set()
            for i, kind in enumerate(kinds):
                if kind not in seen:
                    seen.add(kind)
                    keep.append(i)
            extra = [i for i in range(old_layers) if i not in keep]
            keep = sorted(keep + extra[: max(0, LAYERS - len(keep))])
            return keep
    return None


def _truncate_layer_lists(cfg: dict[str, Any], old_layers: int, keep: list[int]) -> None:
    """Cut every per-layer list (length == old layer count) and per-layer dict down to the kept layers."""
    for key, value in list(cfg.items()):
        if isinstance(value, list) and len(value) == old_layers and old_layers > 1:
            cfg[key] = [value[i] for i in keep]
        elif key in _LAYER_LIST_KEYS and isinstance(value, str) and len(value) == old_layers:
            cfg[key] = "".join(value[i] for i in keep)
        elif is_layer_table(value):
            where = {int(k): k for k in value}
            cfg[key] = {f"{new:0{len(where[old])}d}": value[where[old]] for new, old in enumerate(keep) if old in where}


def _out_count(original: dict[str, Any]) -> int:
    """How many stages a backbone config exports (``out_indices``/``out_features``), 0 for none."""
    for key in ("out_indices", "out_features"):
        value = original.get(key)
        if isinstance(value, list) and value:
            return len(value)
    return 0


def _fix_outputs(cfg: dict[str, Any], layers: int, count: int) -> None:
    """Point a ViT-style backbone's exported stages at the last ``count`` of its ``layers`` layers."""
    indices = list(range(layers - count + 1, layers + 1))
    if "out_indices" in cfg:
        cfg["out_indices"] = indices
    if "out_features" in cfg:
        cfg["out_features"] = [f"stage{i}" for i in indices]
    if "stage_names" in cfg:
        cfg["stage_names"] = ["stem"] + [f"stage{i}" for i in range(1, layers + 1)]


def _fix_layers(cfg: dict[str, Any], original: dict[str, Any]) -> None:
    layer_key = next((k for k in ("num_hidden_layers", "num_layers", "n_layer", "n_layers") if k in original), None)
    if layer_key is None or not isinstance(original[layer_key], int):
        return
    if isinstance(original.get("depths"), list) and len(original["depths"]) == original[layer_key]:
        cfg[layer_key] = original[layer_key]  # a stage count derived from ``depths``, not a layer count
        return
    old = original[layer_key]
    outs = _out_count(original) if not isinstance(original.get("depths"), list) else 0
    keep = _layer_plan(original, old) or list(range(min(old, max(LAYERS, outs))))
    cfg[layer_key] = len(keep)
    _truncate_layer_lists(cfg, old, keep)
    if outs:
        _fix_outputs(cfg, len(keep), min(outs, len(keep)))


def _rotary_half(tree: dict[str, Any], head_dim: int) -> int:
    value = tree.get("rope_parameters")
    rope: dict[str, Any] = value if isinstance(value, dict) else {}
    factor = rope.get("partial_rotary_factor", tree.get("partial_rotary_factor", 1.0)) or 1.0
    return max(1, int(head_dim * float(factor)) // 2)


def _sections(half: int, n: int) -> list[int]:
    parts = [half // n] * n
    parts[-1] += half - sum(parts)
    return parts


def _fix_mrope(tree: Any, head_dim: int, *, force: bool = False) -> None:
    """Make every ``mrope_section`` sum to half the rotary dimension (``force``: add one where rope is)."""
    if not isinstance(tree, dict):
        return
    rope = tree.get("rope_parameters")
    if force and isinstance(rope, dict) and "mrope_section" not in rope and "rope_theta" in rope:
        rope["mrope_section"] = _sections(_rotary_half(tree, head_dim), 3)
    section = tree.get("mrope_section")
    if isinstance(section, list) and section:
        tree["mrope_section"] = _sections(_rotary_half(tree, head_dim), len(section))
    for key, value in tree.items():
        if isinstance(value, dict) and not is_subconfig(key, value):
            _fix_mrope(value, head_dim)
            if key == "rope_parameters" and isinstance(value.get("mrope_section"), list):
                value["mrope_section"] = _sections(_rotary_half(tree, head_dim), len(value["mrope_section"]))


def _fill_none(key: str, cfg: dict[str, Any]) -> int | None:
    """A tiny value for a size the default config leaves None but the modeling code needs."""
    if key in ("head_dim", "vocab_size"):
        return HEAD_DIM if key == "head_dim" else VOCAB
    if key in _KV_KEYS:
        return next((min(cfg[k], HEADS) for k in _HEAD_KEYS if isinstance(cfg.get(k), int)), None)
    has_experts = any(isinstance(cfg.get(k), int) and cfg[k] > 1 for k in _EXPERT_KEYS)
    has_topk = any(isinstance(cfg.get(k), int) for k in _TOPK_KEYS)
    if key in _TOPK_KEYS and has_experts:
        return TOP_K
    if key in _EXPERT_KEYS and has_topk:
        return EXPERTS
    if key in _FFN_KEYS and has_experts:
        return FFN
    return None


def _shrink_level(
    cfg: dict[str, Any], ids: set[int], keep: frozenset[str], widths: set[int], stages: dict[int, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in keep:
            out[key] = value
        elif is_subconfig(key, value):
            out[key] = _shrink_level(value, ids, keep, widths, stages)
        elif is_layer_table(value):  # per-layer overrides of sizes shrink like the sizes they override
            out[key] = {
                k: _shrink_level(v, ids, keep, widths, stages) if isinstance(v, dict) else v for k, v in value.items()
            }
        elif key == "vocab_size" and isinstance(value, int) and value > VOCAB:
            out[key] = _vocab(value, ids)
        elif isinstance(value, int) and not isinstance(value, bool):
            small = _shrink_int(key, value, cfg)
            out[key] = WIDTH if small == value and _linked_width(key, value, widths) else small
        elif isinstance(value, list):
            small_list = _shrink_list(key, value)
            out[key] = _linked_list(key, value, stages) if small_list == value else small_list
        elif value is None:
            out[key] = _fill_none(key, cfg)
        else:
            out[key] = value
    if "num_hidden_layers" not in keep:
        _fix_layers(out, cfg)
    nope, rope = out.get("qk_nope_head_dim"), out.get("qk_rope_head_dim")
    if "qk_head_dim" in out and isinstance(nope, int) and isinstance(rope, int):
        out["qk_head_dim"] = nope + rope  # latent attention: the query head is its two parts
    _fix_mrope(out, _head_dim(out))
    return out


def _head_dim(tree: dict[str, Any]) -> int:
    head_dim = tree.get("head_dim")
    if isinstance(head_dim, int):
        return head_dim
    heads = tree.get("num_attention_heads")
    width = tree.get("hidden_size")
    return width // heads if isinstance(width, int) and isinstance(heads, int) and heads else HEAD_DIM


def fix_derived(tree: dict[str, Any], *, mrope: bool = False) -> bool:
    """Fix sizes a config derives at construction (``mrope_section``); True when something changed.

    Args:
        tree: A tiny config dict (changed in place).
        mrope: The modeling code reads ``mrope_section`` (with a full-size default): add one.
    """
    before = repr(tree)
    _fix_mrope(tree, _head_dim(tree), force=mrope)
    for key, value in tree.items():
        if is_subconfig(key, value):
            fix_derived(value, mrope=mrope)
    return repr(tree) != before


PROFILES = ("tiny", "depth")
"""``tiny``: every size small (the default). ``depth``: only depth, experts, vocabulary, positions and
images shrink; widths stay at their defaults (for architectures whose widths are linked in ways the
tiny profile cannot keep consistent)."""

_WIDTH_LIKE = (
    _WIDTH_KEYS | _HEAD_KEYS | _KV_KEYS | _FFN_KEYS | _STAGE_WIDTH_KEYS | _STAGE_HEAD_KEYS | frozenset(_FIXED)
) - {"n_group", "num_group", "num_expert_group", "topk_group", "n_shared_experts", "num_shared_experts"}


def shrink_config(config: dict[str, Any], *, keep: tuple[str, ...] = (), profile: str = "tiny") -> dict[str, Any]:
    """A tiny copy of a default config dict (the input is not changed).

    Args:
        config: ``PreTrainedConfig.to_dict()`` of the default config.
        keep: Keys to leave at their default value, at every nesting level.
        profile: One of :data:`PROFILES`.

    Returns:
        The shrunk config dict.
    """
    ids = _token_ids(config, set())
    if profile == "depth":
        return _shrink_level(config, ids, frozenset(keep) | _WIDTH_LIKE, set(), {})
    return _shrink_level(config, ids, frozenset(keep), _widths(config, set()), _stage_map(config, {}))
