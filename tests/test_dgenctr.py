"""DGenCTR: masking schedule, loss, fine-tuning without label leaks, transfer, ablations, set invariance."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from genctr.config import from_dict
from genctr.errors import ConfigError, DataValidationError
from genctr.models.dgenctr import (
    FIELDS,
    LABEL,
    SEQ,
    DGenCTR,
    DGenCTRConfig,
    dgenctr_loss,
    field_losses,
    transfer,
)
from genctr.models.dgenctr_noise import FINETUNE_T, draw_noise, loss_weight, mask_ratio

N_USERS, N_ITEMS, N_CATES = 12, 40, 7
ITEM = FIELDS.index("item")
PRICE = FIELDS.index("price")


def tiny_cfg(**overrides: object) -> DGenCTRConfig:
    base: dict[str, Any] = dict(embed_dim=16, n_layers=1, n_heads=2, ffn_mult=2, head_hidden=16, dropout=0.0,
                                timesteps=10)
    base.update(overrides)
    return DGenCTRConfig(**base)


def tiny_model(cfg: DGenCTRConfig | None = None, seed: int = 0) -> DGenCTR:
    torch.manual_seed(seed)
    return DGenCTR(cfg or tiny_cfg(), n_users=N_USERS, n_items=N_ITEMS, n_cates=N_CATES).eval()


def tiny_batch(bsz: int = 12, seq_len: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist_len = torch.randint(0, seq_len + 1, (bsz,), generator=g)
    hist_len[0] = 0  # one empty history
    live = torch.arange(seq_len)[None, :] < hist_len[:, None]
    return {
        "user": torch.randint(2, N_USERS, (bsz,), generator=g),
        "item": torch.randint(2, N_ITEMS, (bsz,), generator=g),
        "cate": torch.randint(2, N_CATES, (bsz,), generator=g),
        "price": torch.rand(bsz, generator=g) * 300,
        "hist_item": torch.randint(2, N_ITEMS, (bsz, seq_len), generator=g) * live,
        "hist_cate": torch.randint(2, N_CATES, (bsz, seq_len), generator=g) * live,
        "hist_len": hist_len,
        "label": torch.randint(0, 2, (bsz,), generator=g).float(),
    }


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "bad",
    [dict(embed_dim=10, n_heads=4), dict(schedule="sqrt"), dict(loss_weighting="elbo"),
     dict(transfer="heads"), dict(temperature=0.0), dict(fixed_mask_ratio=0.0),
     dict(price_boundaries=(5.0, 1.0)), dict(diffusion="yes"), dict(timesteps=0),
     dict(pretrain_samples="clicks"), dict(label_loss_weight=0.0), dict(label_loss_weight=-1.0)],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        tiny_cfg(**bad)


def test_config_from_dict_rejects_unknown_keys_and_coerces_lists() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(DGenCTRConfig, {"n_layer": 2})
    cfg = from_dict(DGenCTRConfig, {"price_boundaries": [1, 10]})
    assert cfg.price_boundaries == (1.0, 10.0) and cfg.n_price == 5


def test_vocab_size_and_batch_errors() -> None:
    with pytest.raises(ConfigError, match="user"):
        DGenCTR(tiny_cfg(), n_users=1, n_items=N_ITEMS, n_cates=N_CATES)
    batch = tiny_batch()
    del batch["hist_len"]
    with pytest.raises(DataValidationError, match="hist_len"):
        tiny_model()(batch)


def test_price_buckets() -> None:
    emb = tiny_model(tiny_cfg(price_boundaries=(1.0, 10.0))).embedding
    price = torch.tensor([0.0, -3.0, float("nan"), 0.5, 1.0, 5.0, 10.0, 99.0])
    assert emb.price_bucket(price).tolist() == [1, 1, 1, 2, 2, 3, 3, 4]


# ------------------------------------------------------------------ schedule
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_mask_fraction_matches_schedule(schedule: str) -> None:
    cfg = tiny_cfg(schedule=schedule, timesteps=4)
    expected = {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0} if schedule == "linear" else {
        t: 1 - math.cos(math.pi * t / 8) for t in range(1, 5)
    }
    assert torch.allclose(mask_ratio(torch.arange(1, 5), cfg), torch.tensor(list(expected.values())))
    t, masked = draw_noise(8000, cfg, gen(0))
    assert set(t.tolist()) == {1, 2, 3, 4}
    for step, lam in expected.items():
        sel = masked[t == step]  # (n_t, F)
        n = sel.numel()
        sigma = math.sqrt(max(lam * (1 - lam), 1e-12) / n)
        assert abs(sel.float().mean().item() - lam) <= 4 * sigma + 1e-9, (step, sel.float().mean(), lam)


def test_no_diffusion_uses_the_fixed_ratio_at_every_step() -> None:
    cfg = tiny_cfg(diffusion=False, fixed_mask_ratio=0.3)
    assert torch.allclose(mask_ratio(torch.arange(1, 11), cfg), torch.full((10,), 0.3))
    t, masked = draw_noise(4000, cfg, gen(0))
    assert (t == FINETUNE_T).all()
    frac, sigma = masked.float().mean().item(), math.sqrt(0.3 * 0.7 / masked.numel())
    assert abs(frac - 0.3) < 4 * sigma
    assert torch.allclose(loss_weight(t, cfg), torch.full((4000,), 1 / 0.3))


def test_loss_weights() -> None:
    steps = torch.arange(1, 11)
    lin = tiny_cfg()
    assert torch.allclose(loss_weight(steps, lin), 1 / mask_ratio(steps, lin))
    assert torch.allclose(loss_weight(steps, lin), loss_weight(steps, tiny_cfg(loss_weighting="inverse")))
    cos = tiny_cfg(schedule="cosine")
    w = loss_weight(steps, cos)
    # unbiased: E_t[λ(t) w(t)] = 1, and bounded by T (1/λ(1) would be ~ 40 here)
    assert math.isclose((mask_ratio(steps, cos) * w).mean().item(), 1.0, rel_tol=1e-5)
    assert w.max() <= 10 + 1e-4 < (1 / mask_ratio(steps, cos)).max()
    out = tiny_model(tiny_cfg(loss_weighting="none")).pretrain_logits(tiny_batch(), gen())
    assert math.isclose(out.weights.sum().item(), 1.0, rel_tol=1e-6)


# ------------------------------------------------------------------ loss
def test_loss_ignores_unmasked_fields() -> None:
    g = gen(0)
    logits = torch.randn(6, 8, 8, generator=g, requires_grad=True)
    target_mask = torch.rand(6, 8, generator=g) < 0.5
    weights = torch.rand(6, 8, generator=g) * target_mask
    targets = torch.arange(8).expand(6, 8)  # the true value on the diagonal (in-batch fields)
    loss = dgenctr_loss(logits, targets, target_mask, weights)
    loss.backward()
    assert (logits.grad[~target_mask] == 0).all()
    assert (logits.grad[target_mask].abs().sum(-1) > 0).all()
    bumped = logits.detach().clone()
    bumped[~target_mask] += 5 * torch.randn_like(bumped[~target_mask])
    assert torch.equal(dgenctr_loss(bumped, targets, target_mask, weights), loss.detach())
    bumped[target_mask] += 1.0 * torch.randn_like(bumped[target_mask])  # masked rows do count
    assert not torch.isclose(dgenctr_loss(bumped, targets, target_mask, weights), loss.detach())


def test_model_loss_gives_no_gradient_to_heads_of_unmasked_fields() -> None:
    model, batch = tiny_model(), tiny_batch()
    masked = torch.rand(12, 6, generator=gen(0)) < 0.6
    masked[:, PRICE] = False  # price never masked -> never a target
    masked[:, ITEM] = True
    out = model.pretrain_logits(batch, t=torch.full((12,), 5), masked=masked)
    dgenctr_loss(out.logits, out.targets, out.target_mask, out.weights).backward()
    assert not out.target_mask[PRICE].any()
    assert (model.heads.w1.grad[PRICE] == 0).all() and (model.heads.w2.grad[PRICE] == 0).all()
    assert model.heads.w1.grad[ITEM].abs().sum() > 0


def test_in_batch_duplicates_of_the_true_value_are_not_negatives() -> None:
    model, batch = tiny_model(tiny_cfg(full_softmax_vocab=2)), tiny_batch()  # only the label is full-vocab
    batch["item"] = torch.arange(2, 14)
    batch["item"][:4] = 5  # samples 0..3 share an item
    out = model.pretrain_logits(batch, gen())
    item = out.logits[ITEM]
    assert torch.isinf(item[0, 1:4]).all() and torch.isfinite(item[0, 4:]).all()
    assert torch.isfinite(out.logits.gather(2, out.targets[..., None])).all()  # the true value always scores
    empty = (batch["hist_len"] == 0).nonzero().flatten().tolist()
    assert empty == [0, 3]  # two empty histories: the same sequence value
    assert torch.isinf(out.logits[SEQ, 0, 3]) and torch.isinf(out.logits[SEQ, 3, 0])
    assert torch.isfinite(out.logits[SEQ, 0, [j for j in range(1, 12) if j != 3]]).all()


def test_masked_target_item_does_not_leak_through_the_sequence_token() -> None:
    model, batch = tiny_model(tiny_cfg(full_softmax_vocab=2)), tiny_batch()  # item and cate scored in-batch
    i = 2
    assert batch["hist_len"][i] > 0
    masked = torch.zeros(12, 6, dtype=torch.bool)
    masked[i, ITEM] = masked[i, FIELDS.index("cate")] = True
    t = torch.full((12,), 5)
    before = model.pretrain_logits(batch, t=t, masked=masked).logits
    batch["item"][i] = (batch["item"][i] + 1) % N_ITEMS
    batch["cate"][i] = (batch["cate"][i] + 1) % N_CATES
    after = model.pretrain_logits(batch, t=t, masked=masked).logits
    # sample i's head outputs scored against the other samples' (unchanged) values; -inf
    # entries are duplicates of its true value, which did change
    others = [j for j in range(12) if j != i]
    a, b = before[:, i][:, others], after[:, i][:, others]
    both = torch.isfinite(a) & torch.isfinite(b)
    assert both.sum() > 30 and torch.allclose(a[both], b[both], atol=1e-6)
    assert not torch.allclose(before[ITEM, i, i], after[ITEM, i, i])  # its own target did change
    assert not torch.allclose(before[SEQ, i, i], after[SEQ, i, i])  # and so did its pooled target


@pytest.mark.parametrize("bsz", [32, 256, 1024])
def test_label_loss_at_initialisation_is_log_2(bsz: int) -> None:
    """The label is scored against {0, 1}, not against ~B/2 in-batch copies of the opposite label
    (which gave ~log B: 3.1 / 4.9 / 6.3 at B = 32 / 256 / 1024)."""
    model, batch = tiny_model(tiny_cfg(embed_dim=32)), tiny_batch(bsz, seed=bsz)
    masked = torch.rand(bsz, 6, generator=gen(bsz)) < 0.5
    masked[:, LABEL] = True  # every label is a target
    t = torch.randint(1, 11, (bsz,), generator=gen(bsz + 1))
    with torch.no_grad():
        out = model.pretrain_logits(batch, t=t, masked=masked)
    label_loss = field_losses(out.logits, out.targets, out.target_mask)[LABEL].item()
    assert abs(label_loss - math.log(2)) < 0.05, label_loss


def test_small_fields_are_scored_against_their_whole_vocabulary() -> None:
    cfg = tiny_cfg(full_softmax_vocab=20, price_boundaries=(1.0, 10.0, 100.0))  # price 6 rows, cate 7, user 12
    model, batch = tiny_model(cfg), tiny_batch()
    assert model.full_vocab_fields == ("user", "cate", "price", "label")  # item (40) and seq in-batch
    out = model.pretrain_logits(batch, gen())
    finite = torch.isfinite(out.logits).sum(-1)  # (F, B): candidates per row
    assert (finite[LABEL] == 2).all() and (finite[PRICE] == cfg.n_price - 1).all()  # price: no padding row
    assert (finite[FIELDS.index("user")] == N_USERS - 1).all()
    assert torch.equal(out.targets[LABEL], batch["label"].long())
    assert torch.equal(out.targets[PRICE], model.embedding.price_bucket(batch["price"]))
    assert torch.equal(out.targets[ITEM], torch.arange(12)) and torch.equal(out.targets[SEQ], torch.arange(12))
    true = out.logits.gather(2, out.targets[..., None])  # the true value always scores
    assert torch.isfinite(true).all()


def test_unlabelled_samples_neither_show_nor_predict_their_label() -> None:
    model, batch = tiny_model(), tiny_batch()
    known = torch.tensor([True, False] * 6)
    masked = torch.zeros(12, 6, dtype=torch.bool)  # no noise: only the unknown labels get masked
    out = model.pretrain_logits(dict(batch, label_known=known), t=torch.full((12,), 3), masked=masked)
    assert torch.equal(out.target_mask[LABEL], torch.zeros(12, dtype=torch.bool))  # known ones unmasked
    flipped = dict(batch, label=torch.where(known, batch["label"], 1 - batch["label"]), label_known=known)
    again = model.pretrain_logits(flipped, t=torch.full((12,), 3), masked=masked)
    rest = [k for k in range(6) if k != LABEL]
    torch.testing.assert_close(again.logits[rest], out.logits[rest])  # an unknown label is never seen
    all_masked = torch.ones(12, 6, dtype=torch.bool)
    out = model.pretrain_logits(dict(batch, label_known=known), t=torch.full((12,), 3), masked=all_masked)
    assert torch.equal(out.target_mask[LABEL], known) and (out.weights[LABEL][~known] == 0).all()


# ------------------------------------------------------------------ fine-tuning
def test_finetune_masks_the_label_and_never_reads_it() -> None:
    model, batch = tiny_model(), tiny_batch()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.denoiser.register_forward_hook(lambda mod, args, out: seen.append(args))
    logits = model(batch)
    assert logits.shape == (12,)
    tokens, t = seen[0]
    label_token = model.embedding.mask[LABEL] + model.embedding.field_type[LABEL]
    assert torch.allclose(tokens[:, LABEL], label_token.expand(12, -1))
    assert (t == FINETUNE_T).all()
    batch["label"] = 1 - batch["label"]
    assert torch.equal(model(batch), logits)
    del batch["label"]
    assert torch.equal(model(batch), logits)


def test_finetune_logit_is_the_pretraining_label_softmax() -> None:
    model, batch = tiny_model(), tiny_batch()
    masked = torch.zeros(12, 6, dtype=torch.bool)
    masked[:, LABEL] = True
    batch["label"] = torch.tensor([0.0, 1.0] * 6)  # both label values in the batch
    out = model.pretrain_logits(batch, t=torch.full((12,), FINETUNE_T), masked=masked)
    row = out.logits[LABEL, 1]  # sample 1 (y = 1): candidates = e(0), e(1), then -inf padding
    assert out.targets[LABEL, 1] == 1 and torch.isinf(row[2:]).all()
    assert torch.allclose(row[1] - row[0], model(batch)[1], atol=1e-5)


# ------------------------------------------------------------------ transfer
def _groups(model: DGenCTR) -> dict[str, list[str]]:
    names = list(model.state_dict())
    return {
        "full": names,
        "embedding_only": [n for n in names if n.startswith("embedding.")],
        "scorer_only": [n for n in names if n.startswith(("denoiser.", "heads."))],
        "encoder": [n for n in names if n.startswith(("embedding.", "denoiser."))
                    and not n.startswith("embedding.tables.label.")],
    }


@pytest.mark.parametrize("mode", ["full", "embedding_only", "scorer_only", "encoder"])
def test_transfer_copies_exactly_the_named_subset(mode: str) -> None:
    pre, ft = tiny_model(seed=0), tiny_model(seed=1)
    with torch.no_grad():  # constant inits (norms, biases) would otherwise match already
        for value in pre.state_dict().values():
            value.add_(0.5 + torch.rand_like(value))
    before = {n: v.clone() for n, v in ft.state_dict().items()}
    copied = transfer(pre, ft, mode)
    expected = _groups(pre)[mode]
    assert copied == expected and len(copied) > 0
    src = pre.state_dict()
    for name, value in ft.state_dict().items():
        if name in expected:
            assert torch.equal(value, src[name]), name
        else:
            assert torch.equal(value, before[name]), name
            assert not torch.equal(value, src[name]), name


def test_transfer_groups_partition_the_model_and_default_to_config() -> None:
    groups = _groups(tiny_model())
    assert sorted(groups["embedding_only"] + groups["scorer_only"]) == sorted(groups["full"])
    ft = tiny_model(tiny_cfg(transfer="embedding_only"), seed=1)
    assert transfer(tiny_model(), ft) == groups["embedding_only"]
    with pytest.raises(ConfigError, match="heads.w1"):
        transfer(tiny_model(tiny_cfg(feature_specific_heads=False)), tiny_model(), "full")
    with pytest.raises(ConfigError):
        transfer(tiny_model(), tiny_model(), "everything")


def test_encoder_transfer_starts_the_label_head_fresh_and_groups_what_it_copied() -> None:
    groups = _groups(tiny_model())
    heads = {n for n in groups["full"] if n.startswith("heads.")}
    assert heads and set(groups["full"]) - set(groups["encoder"]) == heads | {"embedding.tables.label.weight"}
    tables = tiny_model(tiny_cfg(transfer="encoder"), seed=1)
    transfer(tiny_model(), tables)
    assert tables.transfer_group == tables.transferred_tables  # default transfer_group: the tables
    assert "embedding.tables.item.weight" in tables.transferred_tables
    assert "embedding.tables.label.weight" not in tables.transferred_tables
    every = tiny_model(tiny_cfg(transfer="encoder", transfer_group="all"), seed=1)
    copied = transfer(tiny_model(), every)
    params = {n for n, _ in every.named_parameters()}
    assert set(every.transfer_group) == set(copied) & params == set(every.copied_parameters)  # no buffer
    assert any(n.startswith("denoiser.") for n in every.transfer_group)
    assert every.transferred_tables == tables.transferred_tables  # drift still reads the tables alone
    with pytest.raises(ConfigError, match="transfer_group"):
        tiny_cfg(transfer_group="some")


# ------------------------------------------------------------------ ablations
def _shapes(model: DGenCTR) -> dict[str, tuple[int, ...]]:
    return {n: tuple(v.shape) for n, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "switch", [dict(label_in_pretraining=False), dict(diffusion=False), dict(feature_specific_heads=False)]
)
def test_ablations_keep_parameter_names(switch: dict) -> None:
    base, ablated = _shapes(tiny_model()), _shapes(tiny_model(tiny_cfg(**switch)))
    assert list(base) == list(ablated)
    changed = {n for n in base if base[n] != ablated[n]}
    assert changed == ({"heads.w1", "heads.b1", "heads.w2", "heads.b2"}
                       if "feature_specific_heads" in switch else set())


def test_shared_head_is_one_function_for_every_field() -> None:
    h = torch.randn(3, 1, 16).expand(3, 6, 16)  # the same hidden state in every slot
    shared = tiny_model(tiny_cfg(feature_specific_heads=False)).heads
    assert shared.w1.shape[0] == 1
    out = shared(h)
    assert torch.allclose(out, out[:, :1].expand_as(out))
    specific = tiny_model().heads(h)
    assert not torch.allclose(specific, specific[:, :1].expand_as(specific))


def test_label_out_of_pretraining_only_removes_the_label() -> None:
    with_label = tiny_model()
    without = tiny_model(tiny_cfg(label_in_pretraining=False))
    without.load_state_dict(with_label.state_dict())
    batch = tiny_batch()
    a, b = with_label.pretrain_logits(batch, gen(3)), without.pretrain_logits(batch, gen(3))
    rest = [k for k in range(6) if k != LABEL]
    assert torch.equal(a.target_mask[rest], b.target_mask[rest]) and a.target_mask[LABEL].any()
    assert not b.target_mask[LABEL].any() and (b.weights[LABEL] == 0).all()
    # the label never reaches the denoiser: flipping it changes no other field's scores ...
    flipped = dict(batch, label=1 - batch["label"])
    assert torch.allclose(without.pretrain_logits(flipped, gen(3)).logits[rest], b.logits[rest], atol=1e-6)
    # ... whereas with the label in pretraining an unmasked label is seen by the others
    assert not torch.allclose(with_label.pretrain_logits(flipped, gen(3)).logits[rest], a.logits[rest], atol=1e-6)


def test_label_loss_weight_scales_only_the_label_terms() -> None:
    base = tiny_model()
    heavy = tiny_model(tiny_cfg(label_loss_weight=5.0))
    heavy.load_state_dict(base.state_dict())
    batch = tiny_batch()
    a, b = base.pretrain_logits(batch, gen(4)), heavy.pretrain_logits(batch, gen(4))
    rest = [k for k in range(6) if k != LABEL]
    assert a.target_mask[LABEL].any() and torch.equal(a.target_mask, b.target_mask)
    assert torch.equal(a.weights[rest], b.weights[rest])
    assert torch.allclose(b.weights[LABEL], 5.0 * a.weights[LABEL])
    assert torch.equal(a.logits, b.logits)  # the network is the same; only the objective leans on the label


# ------------------------------------------------------------------ set invariance
def test_denoiser_is_permutation_equivariant() -> None:
    model = tiny_model(tiny_cfg(n_layers=2))
    tokens, t = torch.randn(4, 6, 16, generator=gen(0)), torch.tensor([1, 4, 7, 10])
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    assert torch.allclose(model.denoiser(tokens[:, perm], t), model.denoiser(tokens, t)[:, perm], atol=1e-5)


def test_field_order_does_not_change_outputs() -> None:
    model, batch = tiny_model(tiny_cfg(n_layers=2)), tiny_batch()
    ref_ctr, ref_pre = model(batch), model.pretrain_logits(batch, gen(2))
    for order in [tuple(reversed(FIELDS)), ("seq", "label", "user", "price", "cate", "item")]:
        model.field_order = order
        assert torch.allclose(model(batch), ref_ctr, atol=1e-5)
        out = model.pretrain_logits(batch, gen(2))
        assert torch.equal(out.target_mask, ref_pre.target_mask)
        assert torch.allclose(out.logits, ref_pre.logits, atol=1e-5)


def test_padding_beyond_hist_len_is_ignored() -> None:
    model, batch = tiny_model(), tiny_batch()
    ref = model(batch)
    live = torch.arange(5)[None, :] < batch["hist_len"][:, None]
    noisy = dict(batch, hist_item=torch.where(live, batch["hist_item"], 9))
    assert torch.allclose(model(noisy), ref, atol=1e-6)


def test_config_is_a_plain_dataclass() -> None:
    cfg = tiny_cfg()
    assert dataclasses.asdict(cfg)["schedule"] == "linear"
