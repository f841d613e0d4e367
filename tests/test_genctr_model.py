"""GenCTR decoder and next-item sampled softmax: causality, negatives, masks, loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genctr.errors import ConfigError
from genctr.models import GenCTR, ModelConfig, NegativeSampler, sampled_softmax_loss

N_ITEMS, N_CATES, L = 14, 5, 6
# items 2..13 in categories 2, 3, 4 (four items each); category 4 is {10..13}
ITEM_CATE = torch.tensor([0, 0] + [2] * 4 + [3] * 4 + [4] * 4)


def make_cfg(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        n_users=4, n_items=N_ITEMS, n_cates=N_CATES, embed_dim=8, max_seq_len=L, n_negatives=5,
        decoder={"d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0},
    )
    base.update(kw)
    return ModelConfig(**base)


def make_seq(seed: int = 0, B: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(2, N_ITEMS, (B, L), generator=g)
    length = torch.tensor([L, 4, 1, 0, 2, 5][:B])
    item[torch.arange(L) >= length[:, None]] = 0  # left-aligned padding
    return item, ITEM_CATE[item], length


@pytest.mark.parametrize("n_layers", [1, 2])
def test_decoder_is_causal(n_layers: int) -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(decoder={"d_model": 16, "n_heads": 2, "n_layers": n_layers, "dropout": 0.0})).eval()
    item, cate, _ = make_seq()
    full = torch.full((3,), L)
    g = model(item, cate, full)
    for t in (0, 2, L - 2):
        item2 = item.clone()
        item2[:, t] = (item[:, t] - 2 + 1) % (N_ITEMS - 2) + 2  # a different real item
        g2 = model(item2, cate, full)
        torch.testing.assert_close(g2[:, : t + 1], g[:, : t + 1], rtol=0, atol=1e-6)
        assert (g2[:, t + 1 :] - g[:, t + 1 :]).abs().max() > 1e-4  # later positions see it


def test_padding_after_seq_len_does_not_matter() -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(decoder={"d_model": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.0})).eval()
    item, cate, length = make_seq()
    g = model(item, cate, length)
    item2 = item.clone()
    item2[torch.arange(L) >= length[:, None]] = 7
    torch.testing.assert_close(model(item2, ITEM_CATE[item2], length), g, rtol=0, atol=1e-6)
    assert torch.all(g[1, 4:] == 0)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_encode_target_equals_forward_with_target_appended(n_layers: int) -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(decoder={"d_model": 16, "n_heads": 2, "n_layers": n_layers, "dropout": 0.0})).eval()
    item, cate, length = make_seq()
    target = torch.tensor([2, 3, 4])
    out = model.encode_target(item, cate, length, target)  # [B, D]
    assert out.shape == (3, 16)
    for b in range(3):  # reference: forward on the (most recent L-1) history + the target slot
        n = int(length[b])
        start = max(0, n - (L - 1))  # row 0 is full (n = L): its oldest item is dropped
        seq_c = torch.cat([cate[b, start:n], target[b : b + 1]])[None]
        seq_i = torch.cat([item[b, start:n], torch.tensor([0])])[None]
        ref = model(seq_i, seq_c, torch.tensor([n - start + 1]))[0, n - start]
        torch.testing.assert_close(out[b], ref, rtol=1e-5, atol=1e-5)
    # a full history keeps its most recent L-1 items: the target sits at position L-1 < max_seq_len
    shifted = torch.roll(item, -1, 1)
    shifted[:, -1] = 0
    again = model.encode_target(shifted, ITEM_CATE[shifted], (length - 1).clamp_min(0), target)
    torch.testing.assert_close(again[0], out[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="max_seq_len"):
        model(torch.zeros(1, L + 1, dtype=torch.long), torch.zeros(1, L + 1, dtype=torch.long), torch.tensor([1]))


def test_cs_negatives_share_the_positive_category() -> None:
    sampler = NegativeSampler(N_ITEMS, N_CATES, "cs", 50, ITEM_CATE)
    pos = torch.arange(2, N_ITEMS).repeat(20)
    neg = sampler(pos, torch.Generator().manual_seed(1))
    assert neg.shape == (pos.numel(), 50)
    assert torch.equal(ITEM_CATE[neg], ITEM_CATE[pos][:, None].expand_as(neg))
    for c in (2, 3, 4):  # every item of the category is reachable
        members = set(torch.nonzero(ITEM_CATE == c).flatten().tolist())
        assert set(neg[ITEM_CATE[pos] == c].flatten().tolist()) == members


def test_cs_falls_back_to_uniform_for_empty_categories() -> None:
    cats = ITEM_CATE.clone()
    cats[13] = 1  # item 13: OOV category -> no bucket
    neg = NegativeSampler(N_ITEMS, N_CATES, "cs", 200, cats)(torch.tensor([13]), torch.Generator().manual_seed(0))
    assert neg.min() >= 2 and len(set(neg.tolist()[0])) > 4  # beyond any single category


def test_rs_negatives_cover_the_vocabulary_and_skip_pad_oov() -> None:
    sampler = NegativeSampler(N_ITEMS, N_CATES, "rs", 20, ITEM_CATE)
    neg = sampler(torch.full((200,), 5), torch.Generator().manual_seed(0))
    assert set(neg.flatten().tolist()) == set(range(2, N_ITEMS))


def test_sampler_buffers_round_trip_through_state_dict() -> None:
    a = NegativeSampler(N_ITEMS, N_CATES, "cs", 5, ITEM_CATE)
    b = NegativeSampler(N_ITEMS, N_CATES, "cs", 5)
    b.load_state_dict(a.state_dict())
    pos = torch.arange(2, N_ITEMS)
    assert torch.equal(a(pos, torch.Generator().manual_seed(3)), b(pos, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_pretrain_logits_mask_accidental_hits_and_invalid_positions(similarity: str) -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(similarity=similarity), ITEM_CATE)
    item, cate, length = make_seq()
    item[1, 2] = 1  # an OOV target at a position < seq_len: not a valid target
    batch = {"seq_item": item, "seq_cate": ITEM_CATE[item], "seq_len": length}
    logits, valid = model.pretrain_logits(batch, torch.Generator().manual_seed(7))
    assert logits.shape == (3 * L, 1 + 5) and valid.shape == (3 * L,)
    expected_valid = (torch.arange(L) < length[:, None]) & (item >= 2)
    assert torch.equal(valid, expected_valid.flatten())
    # replay the sampler with the same seed: -inf exactly where a negative is the positive
    neg = model.sampler(item.flatten(), torch.Generator().manual_seed(7))
    hits = neg == item.flatten()[:, None]
    assert hits[valid].any() and (~hits[valid]).any()  # 4 items a category: both happen
    assert torch.all(torch.isneginf(logits[:, 1:][hits]))
    assert torch.all(torch.isfinite(logits[:, 1:][~hits])) and torch.all(torch.isfinite(logits[:, 0]))
    # column 0 is the true item scored against the decoder output
    h = model.head(model(item, ITEM_CATE[item], length)).reshape(3 * L, -1)[valid]
    w = model.item_embedding(item.flatten()[valid])
    s = F.cosine_similarity(h, w, dim=-1) if similarity == "cosine" else (h * w).sum(-1)
    torch.testing.assert_close(logits[valid, 0], s / model.cfg.temperature, rtol=1e-4, atol=1e-4)


def test_single_item_category_gives_only_hits() -> None:
    cats = torch.arange(N_ITEMS) % N_CATES  # ids spread so that category 4 = {4, 9}
    cats[:2] = 0
    cats[9] = 2  # category 4 now holds item 4 only
    model = GenCTR(make_cfg(), cats)
    item = torch.full((1, L), 4)
    logits, valid = model.pretrain_logits(
        {"seq_item": item, "seq_cate": cats[item], "seq_len": torch.tensor([L])}, None
    )
    assert valid.all() and torch.all(torch.isneginf(logits[:, 1:]))
    assert sampled_softmax_loss(logits, valid).item() == pytest.approx(0.0, abs=1e-6)


def test_sampled_softmax_loss_matches_cross_entropy_and_ignores_masked_rows() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    mask = torch.tensor([True, False, True, True, False])
    poisoned = torch.where(mask[:, None], logits, torch.tensor(float("nan")))
    loss = sampled_softmax_loss(poisoned, mask)
    ref = F.cross_entropy(logits.detach()[mask], torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert torch.all(torch.isfinite(logits.grad)) and torch.all(logits.grad[~mask] == 0)
    assert sampled_softmax_loss(logits, torch.zeros(5, dtype=torch.bool)).item() == 0.0


def test_pretraining_gradients_reach_every_part() -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(decoder={"d_model": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.1}), ITEM_CATE)
    item, cate, length = make_seq()
    logits, valid = model.pretrain_logits({"seq_item": item, "seq_cate": cate, "seq_len": length})
    sampled_softmax_loss(logits, valid).backward()
    for name in ("item_embedding.weight", "cate_embedding.weight", "bos", "key_proj.weight",
                 "blocks.0.attn.q_proj.weight", "blocks.1.ffn.0.weight", "head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_rows_without_a_valid_negative_are_left_out_of_the_mean() -> None:
    """A row whose negatives are all accidental hits has a loss of 0 whatever the model does; it must
    not dilute the mean (and the gradient) of the rows that do have negatives."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 4, generator=g)
    logits[0, 1:] = float("-inf")  # every negative of row 0 was the positive
    mask = torch.ones(4, dtype=torch.bool)
    ref = F.cross_entropy(logits[1:], torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(sampled_softmax_loss(logits, mask), ref)


def test_log_expected_count_is_log_k_times_the_draw_probability() -> None:
    pos = torch.tensor([2, 6, 13])
    rs = NegativeSampler(N_ITEMS, N_CATES, "rs", 5, ITEM_CATE).log_expected_count(pos)
    torch.testing.assert_close(rs, torch.full((3, 1), math.log(5 / (N_ITEMS - 2))))  # 12 real items
    cats = ITEM_CATE.clone()
    cats[13] = 1  # OOV category: falls back to uniform draws
    cs = NegativeSampler(N_ITEMS, N_CATES, "cs", 5, cats).log_expected_count(pos)
    torch.testing.assert_close(cs[:, 0], torch.tensor([math.log(5 / 4), math.log(5 / 4), math.log(5 / 12)]))


@pytest.mark.parametrize(("negatives", "logq", "support"), [("rs", None, N_ITEMS - 2), ("cs", None, None),
                                                             ("cs", True, 4), ("rs", False, None)])
def test_log_q_correction_of_the_negatives(negatives: str, logq: bool | None, support: int | None) -> None:
    """Default on for rs (uniform over the 12 real items: each negative + log(12 / K)), off for cs."""
    torch.manual_seed(0)
    model = GenCTR(make_cfg(negatives=negatives, logq_correction=logq), ITEM_CATE)
    assert model.cfg.uses_logq is (support is not None)
    item, cate, length = make_seq()
    batch = {"seq_item": item, "seq_cate": cate, "seq_len": length}
    logits, valid = model.pretrain_logits(batch, torch.Generator().manual_seed(7))
    scores, cand, _ = model.candidate_scores(batch, torch.Generator().manual_seed(7))
    shift = 0.0 if support is None else math.log(support / 5)
    live = torch.isfinite(logits[:, 1:]) & valid[:, None]  # real targets' negatives that are not hits
    torch.testing.assert_close(logits[:, 1:][live], scores[:, 1:][live] + shift)
    torch.testing.assert_close(logits[:, 0], scores[:, 0])  # the positive is never corrected


BIDI = {"d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0, "context": "bidirectional"}


def test_bidirectional_context_sees_every_other_item_but_never_its_own() -> None:
    torch.manual_seed(0)
    model = GenCTR(make_cfg(decoder=BIDI)).eval()
    item, cate, length = make_seq(B=4)  # lengths 6, 4, 1, 0
    g = model(item, cate, length, bidirectional=True)
    for t in (0, 2):
        item2 = item.clone()
        item2[:, t] = (item[:, t] - 2 + 1) % (N_ITEMS - 2) + 2  # a different real item at t
        g2 = model(item2, cate, length, bidirectional=True)
        # row 0 (length 6) and row 1 (length 4) hold a real item at t: position t is blind to it...
        torch.testing.assert_close(g2[:2, t], g[:2, t], rtol=0, atol=1e-6)
        # ...and positions before t see it: the context runs both ways (a causal pass never would)
        assert t == 0 or (g2[:2, :t] - g[:2, :t]).abs().max() > 1e-4
        assert (g2[:2, t + 1: 4] - g[:2, t + 1: 4]).abs().max() > 1e-4
    # padding is never attended, and padded positions are 0
    item3 = item.clone()
    item3[torch.arange(L) >= length[:, None]] = 7
    torch.testing.assert_close(model(item3, ITEM_CATE[item3], length, bidirectional=True), g, rtol=0, atol=1e-6)
    assert torch.all(g[1, 4:] == 0) and torch.all(g[3] == 0)


def test_bidirectional_changes_pretraining_only() -> None:
    """The objective reads both sides; encode_target (fine-tuning, serving) is the causal read of
    the same weights, and the held-out diagnostic's default stays causal."""
    torch.manual_seed(0)
    causal = GenCTR(make_cfg()).eval()
    bidi = GenCTR(make_cfg(decoder=BIDI)).eval()
    bidi.load_state_dict(causal.state_dict())
    item, cate, length = make_seq()
    batch = {"seq_item": item, "seq_cate": cate, "seq_len": length}
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    lc, vc = causal.pretrain_logits(batch, g1)
    lb, vb = bidi.pretrain_logits(batch, g2)
    seen = vc.unsqueeze(1) & torch.isfinite(lc) & torch.isfinite(lb)  # valid rows, no masked hits
    assert torch.equal(vc, vb) and (lc - lb)[seen].abs().max() > 1e-3  # the objective differs
    s1 = causal.candidate_scores(batch, torch.Generator().manual_seed(5))[0]
    s2 = bidi.candidate_scores(batch, torch.Generator().manual_seed(5))[0]
    torch.testing.assert_close(s1, s2)  # held-out next-item scoring: causal for both
    target = torch.tensor([2, 3, 4])
    torch.testing.assert_close(causal.encode_target(item, cate, length, target),
                               bidi.encode_target(item, cate, length, target))


@pytest.mark.parametrize("over", [{"n_layers": 2}, {"attention": "window"}])
def test_bidirectional_context_refuses_what_would_leak(over: dict) -> None:
    with pytest.raises(ConfigError, match="bidirectional' needs n_layers = 1 and attention = 'full'"):
        make_cfg(decoder={**BIDI, **over})
    with pytest.raises(ConfigError, match="model.decoder.context must be one of"):
        make_cfg(decoder={**BIDI, "context": "both"})
