"""Building without torch's default init that transformers overwrites: same weights' init, NaN never left behind."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

from accelerate_core.catalog.fast_init import _default_init_as_nan, build_once_initialised, has_nan

TINY_BERT = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       vocab_size=99, max_position_embeddings=64)  # fmt: skip


def _bert() -> BertModel:
    return BertModel._from_config(TINY_BERT)


def test_transformers_init_covers_every_weight_of_bert_so_the_default_draw_is_skipped() -> None:
    # Given torch's default init turned into a NaN fill while bert is constructed
    with _default_init_as_nan():
        probe = _bert()
        assert torch.isnan(torch.nn.init.kaiming_uniform_(torch.empty(3, 3))).all()
    # Then transformers' own init has drawn every weight (no NaN left), and the real functions are back
    assert not has_nan(probe)
    assert not torch.isnan(torch.nn.init.kaiming_uniform_(torch.empty(3, 3))).any()


def test_a_fast_build_draws_weights_from_the_same_init_as_the_ordinary_one_and_is_seeded() -> None:
    torch.manual_seed(0)
    ordinary = _bert()
    fast = build_once_initialised(_bert, seed=0)
    again = build_once_initialised(_bert, seed=0)
    for (name, p), q, r in zip(fast.named_parameters(), ordinary.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, r), name  # the same seed, the same weights
        if p.dim() == 2 and p.numel() > 500:  # transformers' normal_(0, initializer_range) in both builds
            assert abs(p.std().item() - q.std().item()) < 0.2 * q.std().item(), name
        elif name.endswith("LayerNorm.weight"):
            assert torch.equal(p, q), name  # ones
    assert not has_nan(fast)


def test_a_weight_only_the_default_init_sets_makes_the_ordinary_build_run() -> None:
    # Given a plain torch layer: nothing but its default init draws its weight
    def linear() -> torch.nn.Linear:
        return torch.nn.Linear(8, 4)

    built = build_once_initialised(linear, seed=3)
    # Then the NaN left by the skipped draw was seen and the layer was built again the ordinary way, same seed
    torch.manual_seed(3)
    expected = torch.nn.Linear(8, 4)
    assert not has_nan(built)
    assert torch.equal(built.weight, expected.weight) and torch.equal(built.bias, expected.bias)


def test_has_nan_sees_a_nan_in_a_parameter_or_a_buffer_and_ignores_integer_ones() -> None:
    layer = torch.nn.BatchNorm1d(4)
    assert not has_nan(layer)
    layer.running_mean[1] = float("nan")
    assert has_nan(layer)
    layer.running_mean.zero_()
    layer.weight.data[0] = float("nan")
    assert has_nan(layer)
    assert layer.num_batches_tracked.dtype == torch.long  # an integer buffer is skipped, not an error
