"""Layer tests: seeded tiny tensors, known values, masks."""
from __future__ import annotations

import pytest
import torch

from genctr.config import from_dict
from genctr.errors import ConfigError
from genctr.models.config import ModelConfig
from genctr.models.layers import (
    MLP,
    CrossLayer,
    CrossNet,
    DecoderBlock,
    FeatureEmbedding,
    TargetAttention,
    masked_mean,
    sequence_mask,
)


def test_cross_layer_matches_hand_computation() -> None:
    layer = CrossLayer(3)
    W = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0], [0.5, 0.0, 2.0]])
    b = torch.tensor([0.1, -0.2, 0.3])
    with torch.no_grad():
        layer.linear.weight.copy_(W)
        layer.linear.bias.copy_(b)
    x0 = torch.tensor([[1.0, -2.0, 3.0]])
    xl = torch.tensor([[0.5, 1.0, -1.0]])
    # W xl + b = [0.5+2+0+0.1, 0-1-1-0.2, 0.25+0-2+0.3] = [2.6, -2.2, -1.45]
    # x0 * that + xl = [2.6+0.5, 4.4+1.0, -4.35-1.0]
    expected = torch.tensor([[3.1, 5.4, -5.35]])
    torch.testing.assert_close(layer(x0, xl), expected)


def test_cross_net_crosses_every_layer_with_x0() -> None:
    torch.manual_seed(0)
    net = CrossNet(4, 2)
    x0 = torch.randn(5, 4)
    x1 = x0 * net.layers[0].linear(x0) + x0
    x2 = x0 * net.layers[1].linear(x1) + x1
    torch.testing.assert_close(net(x0), x2)


def test_sequence_mask_and_masked_mean() -> None:
    mask = sequence_mask(torch.tensor([2, 0, 3]), 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    x = torch.arange(18, dtype=torch.float32).view(3, 3, 2)
    out = masked_mean(x, mask)
    torch.testing.assert_close(out[0], x[0, :2].mean(0))
    torch.testing.assert_close(out[1], torch.zeros(2))  # empty history -> 0, not NaN
    torch.testing.assert_close(out[2], x[2].mean(0))


def test_embedding_padding_row_is_zero_and_gets_no_gradient() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding({"item": 6, "cate": 4}, 3)
    idx = torch.tensor([[0, 2, 5], [1, 0, 0]])
    out = emb("item", idx)
    assert out.shape == (2, 3, 3)
    assert torch.all(out[0, 0] == 0)
    out.sum().backward()
    assert torch.all(emb["item"].weight.grad[0] == 0)
    assert emb["item"].weight.grad[2].abs().sum() > 0


def test_mlp_shapes() -> None:
    mlp = MLP(7, (5, 3), dropout=0.2, output_dim=1)
    assert mlp.out_dim == 1
    assert mlp(torch.randn(4, 7)).shape == (4, 1)
    assert MLP(7, (5, 3)).out_dim == 3


def _attention_inputs() -> tuple[TargetAttention, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    att = TargetAttention(4, (8,))
    target = torch.randn(3, 4)
    seq = torch.randn(3, 5, 4)
    mask = sequence_mask(torch.tensor([2, 5, 0]), 5)
    return att, target, seq, mask


def test_target_attention_ignores_padding() -> None:
    att, target, seq, mask = _attention_inputs()
    out = att(target, seq, mask)
    seq2 = seq.clone()
    seq2[~mask] = torch.randn(int((~mask).sum()), 4) * 10  # rewrite every padded position
    torch.testing.assert_close(att(target, seq2, mask), out, rtol=0, atol=0)
    assert torch.all(out[2] == 0)  # nothing valid -> zero vector
    seq3 = seq.clone()
    seq3[0, 1] += 1.0  # a valid position does matter
    assert not torch.allclose(att(target, seq3, mask)[0], out[0])


def test_target_attention_uses_raw_weights_not_softmax() -> None:
    att, target, seq, mask = _attention_inputs()
    t = target[:1, None].expand(1, 5, 4)
    w = att.score(torch.cat([t, seq[:1], t - seq[:1], t * seq[:1]], -1)).squeeze(-1)[0, :2]  # [2]
    expected = (w.unsqueeze(-1) * seq[0, :2]).sum(0)  # raw MLP outputs as weights
    torch.testing.assert_close(att(target, seq, mask)[0], expected)


def test_target_attention_mean_pooling_averages_the_same_weights_over_valid_positions() -> None:
    att, target, seq, mask = _attention_inputs()
    mean = TargetAttention(4, [8], pooling="mean")
    mean.load_state_dict(att.state_dict())
    n = mask.sum(1, keepdim=True)  # [B, 1]
    expected = att(target, seq, mask) / n.clamp_min(1)
    torch.testing.assert_close(mean(target, seq, mask), expected)
    assert n[0] != n[1]  # rows of different lengths: a global constant would not pass
    seq2 = seq.clone()
    seq2[~mask] = 7.0  # padding is still ignored
    torch.testing.assert_close(mean(target, seq2, mask), mean(target, seq, mask), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pooling"):
        TargetAttention(4, [8], pooling="max")


def _din_reference(att: TargetAttention, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DIN target attention written out: MLP([t, s, t - s, t * s]) weights, padding 0, weighted sum (float64)."""
    net = att.score.double()
    t, s = target.double().unsqueeze(1).expand_as(seq), seq.double()
    w = net(torch.cat([t, s, t - s, t * s], -1)).squeeze(-1).masked_fill(~mask, 0.0)  # [B, L]
    att.score.float()
    return (w.unsqueeze(-1) * s).sum(1)


@pytest.mark.parametrize("shared", [True, False])
def test_target_attention_inference_form_equals_the_training_form(shared: bool) -> None:
    # Without autograd the position part is one [D, H] matrix per target (batched matmul) instead
    # of Linear([s, t * s]): the same sums, so both equal the written-out DIN up to rounding.
    torch.manual_seed(1)
    att = TargetAttention(32, (64, 32)).eval()
    b, length = 100, 50
    target = torch.randn(b, 32)
    seq = torch.randn(1, length, 32).expand(b, length, 32).contiguous() if shared else torch.randn(b, length, 32)
    mask = sequence_mask(torch.randint(0, length + 1, (b,)), length)
    want = _din_reference(att, target, seq, mask)
    trained = att(target, seq, mask)  # autograd on: the Linear([s, t * s]) form
    with torch.no_grad():
        nograd = att(target, seq, mask)
    with torch.inference_mode():
        served = att(target, seq, mask)
    torch.testing.assert_close(nograd, served, rtol=0, atol=0)
    for got in (trained.detach(), served):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(served, trained.detach(), rtol=1e-5, atol=1e-5)
    # the row-chunked path (large batches) gives the same rows
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr("genctr.models.layers.target_attention.CHUNK_ELEMENTS", 7 * length * 64)
        torch.testing.assert_close(att(target, seq, mask), served, rtol=1e-6, atol=1e-6)


def test_target_attention_inference_form_ignores_padding() -> None:
    att, target, seq, mask = _attention_inputs()
    with torch.no_grad():
        out = att(target, seq, mask)
        seq2 = seq.clone()
        seq2[~mask] = torch.randn(int((~mask).sum()), 4) * 10
        torch.testing.assert_close(att(target, seq2, mask), out, rtol=0, atol=0)
        assert torch.all(out[2] == 0)


def test_decoder_block_rejects_missing_kv_for_cross() -> None:
    block = DecoderBlock(8, 2, 2, 0.0, cross=True)
    with pytest.raises(ValueError):
        block(torch.randn(1, 3, 8))


def test_model_config_validation() -> None:
    with pytest.raises(ConfigError, match="backbone"):
        ModelConfig(backbone="deepfm")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(decoder={"d_model": 10, "n_heads": 3})
    with pytest.raises(ConfigError, match="table size"):
        ModelConfig(n_items=2)
    with pytest.raises(ConfigError, match="init"):
        ModelConfig(init="he")
    with pytest.raises(ConfigError, match="attention_pooling"):
        ModelConfig(attention_pooling="max")
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(ModelConfig, {"decoder": {"depth": 2}})
    cfg = from_dict(ModelConfig, {"mlp_dims": [8, 4], "decoder": {"n_layers": 2}, "negatives": "rs"})
    assert cfg.mlp_dims == (8, 4) and cfg.decoder.n_layers == 2
    with pytest.raises(ConfigError, match="stats.json"):
        cfg.require_vocab()
    cfg.with_vocab(10, 20, 5).require_vocab()


def test_backbone_linear_init_is_xavier_by_default_and_torch_on_request() -> None:
    from genctr.models.backbones import build_backbone

    cfg = ModelConfig(backbone="dcnv2_ta", mlp_dims=(256, 128), n_users=10, n_items=20, n_cates=5)
    torch.manual_seed(0)
    model = build_backbone(cfg)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) >= 3 + 3 + 2  # tower + head, cross layers, attention MLP
    for m in linears:
        assert torch.all(m.bias == 0)
    tower = model.deep.net[0]  # [256, in] Xavier-normal: std = sqrt(2 / (fan_in + fan_out))
    expected = (2.0 / (tower.in_features + tower.out_features)) ** 0.5
    assert abs(float(tower.weight.std()) / expected - 1) < 0.05
    assert torch.all(model.inputs.embedding["item"].weight[0] == 0)  # embeddings untouched
    torch.manual_seed(0)
    default = build_backbone(ModelConfig(**{**cfg.__dict__, "init": "torch"}))
    assert not torch.all(default.deep.net[0].bias == 0)
    hidden, d_hidden = (next(m for m in b.deep.net if isinstance(m, torch.nn.Linear) and m.in_features == 256)
                        for b in (model, default))  # [128, 256]
    # Kaiming-uniform(a=sqrt(5)) has std 1/sqrt(3 fan_in): half of Xavier's for a 2:1 layer
    assert float(d_hidden.weight.std()) < 0.6 * float(hidden.weight.std())


def test_weighted_bag_equals_embedding_bag_in_value_and_gradient() -> None:
    from genctr.models.layers.embedding import make_embedding
    from genctr.models.layers.lookup import MIN_ROWS, weighted_bag

    torch.manual_seed(0)
    idx = torch.randint(0, 9, (64, MIN_ROWS // 64 + 3))  # past MIN_ROWS: the index_add backward runs
    w = torch.rand(idx.shape)
    grads = []
    for fast in (True, False):
        table = make_embedding(9, 4)
        table.weight.data.copy_(torch.arange(36, dtype=torch.float32).view(9, 4) / 10)
        table.weight.data[0] = 0
        out = weighted_bag(table, idx, w) if fast else torch.nn.functional.embedding_bag(
            idx, table.weight, mode="sum", per_sample_weights=w, padding_idx=0)
        (out * torch.linspace(-1, 1, 4)).sum().backward()
        grads.append((out.detach(), table.weight.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)
    assert torch.all(grads[0][1][0] == 0)  # the pad row gets no gradient
