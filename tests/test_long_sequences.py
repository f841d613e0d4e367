"""Lifelong sequences: windowed decoder attention, SIM target attention, and L = 2000 end to end.

Seeded tiny tensors: each sub-quadratic option equals full attention when its budget covers the
sequence (window >= L, top-K >= L), never sees padding or the future, and its cost (attention
cells the kernels are asked for) grows linearly (window) or not at all (SIM) with L. Then a real
feature build at L = 2000 (Spark, a handful of users with more than 2000 behaviours), a model
forward on its batches and the predictor serving 100 candidates from it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from genctr.config import from_dict
from genctr.errors import ConfigError
from genctr.models import GenCTR, ModelConfig, build_ctr_model
from genctr.models.layers import attention_cells, category_top_k, windowed_causal_attention
from genctr.models.layers.target_attention import TargetAttention
from genctr.serving.forward import Forward

N_ITEMS, N_CATES = 40, 7
ITEM_CATE = torch.cat([torch.zeros(2, dtype=torch.long), 2 + torch.arange(N_ITEMS - 2) % (N_CATES - 2)])


def decoder_cfg(L: int, attention: str = "full", window: int = 4, n_layers: int = 1, **kw: Any) -> ModelConfig:
    return ModelConfig(n_users=6, n_items=N_ITEMS, n_cates=N_CATES, embed_dim=8, max_seq_len=L, n_negatives=4,
                       decoder={"d_model": 16, "n_heads": 2, "n_layers": n_layers, "dropout": 0.0,
                                "attention": attention, "window": window}, **kw)


def sequences(L: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-aligned item / category sequences [B, L] (0 past each length) and lengths [B]."""
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(2, N_ITEMS, (len(lengths), L), generator=g)
    length = torch.tensor(lengths)
    item[torch.arange(L) >= length[:, None]] = 0
    return item, ITEM_CATE[item], length


def twin(cfg: ModelConfig, **decoder: Any) -> tuple[GenCTR, GenCTR]:
    """Two decoders with the same weights: ``cfg`` and ``cfg`` with the decoder fields replaced."""
    torch.manual_seed(0)
    a = GenCTR(cfg, ITEM_CATE).eval()
    b = GenCTR(dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **decoder)), ITEM_CATE).eval()
    b.load_state_dict(a.state_dict())
    return a, b


# -- windowed causal attention ----------------------------------------------------------------

@pytest.mark.parametrize(("T", "window", "sink"), [(10, 3, False), (10, 3, True), (33, 8, True), (7, 7, True),
                                                   (7, 50, False), (5, 1, True), (1, 4, True)])
def test_windowed_attention_equals_band_masked_attention(T: int, window: int, sink: bool) -> None:
    g = torch.Generator().manual_seed(T * 10 + window)
    q, k, v = (torch.randn(2, 3, T, 4, generator=g) for _ in range(3))
    t, s = torch.arange(T)[:, None], torch.arange(T)[None]
    band = (s <= t) & (s > t - window) | ((s == 0) if sink else torch.zeros(T, T, dtype=torch.bool))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(windowed_causal_attention(q, k, v, window, sink=sink), ref, rtol=1e-5, atol=1e-6)
    if window >= T:  # a window covering the stream is plain causal attention
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(windowed_causal_attention(q, k, v, window), causal, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_window_covering_the_sequence_equals_full_attention(n_layers: int) -> None:
    L = 12
    full, windowed = twin(decoder_cfg(L, n_layers=n_layers), attention="window", window=L)
    item, cate, length = sequences(L, [12, 7, 1, 0])
    torch.testing.assert_close(windowed(item, cate, length), full(item, cate, length), rtol=1e-5, atol=1e-5)
    target = torch.tensor([2, 3, 4, 5])
    torch.testing.assert_close(windowed.encode_target(item, cate, length, target),
                               full.encode_target(item, cate, length, target), rtol=1e-5, atol=1e-5)
    batch = {"seq_item": item, "seq_cate": cate, "seq_len": length}
    a, _ = full.pretrain_logits(batch, torch.Generator().manual_seed(1))
    b, _ = windowed.pretrain_logits(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_window_decoder_is_causal_and_local() -> None:
    L, W = 16, 4
    _, model = twin(decoder_cfg(L), attention="window", window=W)
    item, cate, length = sequences(L, [L, L])
    g = model(item, cate, length)
    for t in (0, 5, L - 2):
        changed = item.clone()
        changed[:, t] = (item[:, t] - 2 + 1) % (N_ITEMS - 2) + 2  # another real item, same category kept
        g2 = model(changed, cate, length)
        torch.testing.assert_close(g2[:, : t + 1], g[:, : t + 1], rtol=0, atol=1e-6)  # the future is never seen
        assert (g2[:, t + 1] - g[:, t + 1]).abs().max() > 1e-4  # the next position sees it
        far = t + W + 1  # the first position whose window no longer reaches item t
        if far < L:
            torch.testing.assert_close(g2[:, far:], g[:, far:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_window_decoder_never_attends_padding(n_layers: int) -> None:
    L = 10
    _, model = twin(decoder_cfg(L, n_layers=n_layers), attention="window", window=3)
    item, cate, length = sequences(L, [10, 6, 2, 0])
    noisy = item.clone()
    noisy[torch.arange(L) >= length[:, None]] = 9  # real ids in the padding
    torch.testing.assert_close(model(noisy, ITEM_CATE[noisy], length), model(item, cate, length), rtol=0, atol=1e-6)
    target = torch.tensor([2, 3, 4, 5])
    torch.testing.assert_close(model.encode_target(noisy, ITEM_CATE[noisy], length, target),
                               model.encode_target(item, cate, length, target), rtol=0, atol=1e-6)
    short = length.clamp_max(7)  # columns 7.. are padding in every row: computed or not, the same
    g = model(item, cate, short)
    torch.testing.assert_close(g[:, :7], model(item[:, :7], cate[:, :7], short), rtol=0, atol=1e-6)
    assert torch.all(g[:, 7:] == 0)
    wide = {"seq_item": item, "seq_cate": cate, "seq_len": short}
    narrow = {"seq_item": item[:, :7], "seq_cate": cate[:, :7], "seq_len": short}
    a, valid = model.pretrain_logits(wide, torch.Generator().manual_seed(3))  # [4 * 10, 1 + K]
    b, valid_b = model.pretrain_logits(narrow, torch.Generator().manual_seed(3))  # [4 * 7, 1 + K]
    torch.testing.assert_close(a.view(4, L, -1)[:, :7], b.view(4, 7, -1), rtol=0, atol=1e-6)
    assert torch.equal(valid.view(4, L)[:, :7], valid_b.view(4, 7)) and not valid.view(4, L)[:, 7:].any()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_windowed_encode_target_equals_forward_with_the_target_appended(n_layers: int) -> None:
    L = 14
    _, model = twin(decoder_cfg(L, n_layers=n_layers), attention="window", window=3)
    item, cate, length = sequences(L, [14, 9, 2, 0])
    target = torch.tensor([2, 3, 4, 5])
    out = model.encode_target(item, cate, length, target)  # [B, D]
    for b in range(4):
        n = int(length[b])
        start = max(0, n - (L - 1))  # a full history keeps its most recent L - 1 items
        seq_i = torch.cat([item[b, start:n], torch.tensor([0])])[None]
        seq_c = torch.cat([cate[b, start:n], target[b:b + 1]])[None]
        ref = model(seq_i, seq_c, torch.tensor([n - start + 1]))[0, n - start]
        torch.testing.assert_close(out[b], ref, rtol=1e-5, atol=1e-5)
    shared = model.encode_target(item[:1].expand(4, L), cate[:1].expand(4, L), length[:1].expand(4), target)
    for b in range(4):  # one user's row expanded over 4 candidates = each candidate on its own copy
        alone = model.encode_target(item[:1], cate[:1], length[:1], target[b:b + 1])
        torch.testing.assert_close(shared[b], alone[0], rtol=1e-5, atol=1e-5)


def test_windowed_pretraining_backpropagates_at_every_position() -> None:
    L = 24
    _, model = twin(decoder_cfg(L), attention="window", window=5)
    model.train()
    item, cate, length = sequences(L, [24, 17])
    logits, valid = model.pretrain_logits({"seq_item": item, "seq_cate": cate, "seq_len": length})
    loss = -torch.log_softmax(logits[valid], dim=-1)[:, 0].mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# -- SIM target attention -----------------------------------------------------------------------

def test_category_top_k_keeps_the_category_most_recent_first_then_fills_with_recent_others() -> None:
    #               pos: 0  1  2  3  4  5  6  7 (padding from 6 on in row 0)
    hist_cate = torch.tensor([[3, 4, 3, 5, 4, 3, 3, 3],
                              [2, 2, 2, 2, 2, 2, 2, 2]])
    mask = torch.arange(8)[None] < torch.tensor([[6], [3]])
    idx, keep = category_top_k(hist_cate, mask, torch.tensor([3, 2]), 4)
    assert idx[0].tolist() == [5, 2, 0, 4] and keep[0].all()  # category 3 newest first, then the newest other
    assert idx[1, :3].tolist() == [2, 1, 0] and keep[1].tolist() == [True, True, True, False]  # 3 valid only
    idx, keep = category_top_k(hist_cate, mask, torch.tensor([3, 2]), 50)  # K is capped at L
    assert idx.shape == (2, 8) and keep.sum(1).tolist() == [6, 3]
    assert sorted(idx[0, :6].tolist()) == list(range(6))  # every valid behaviour, none of the padding


def ctr_batch(N: int, L: int, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    item, cate, length = sequences(L, lengths, seed)
    target = torch.randint(2, N_ITEMS, (N,), generator=g)
    return {"user": torch.randint(2, 6, (N,), generator=g), "item": target, "cate": ITEM_CATE[target],
            "price": torch.rand(N, generator=g), "hist_item": item, "hist_cate": cate, "hist_len": length}


def ta_twin(L: int, top_k: int, pooling: str = "sum") -> tuple[torch.nn.Module, torch.nn.Module]:
    base = dict(backbone="dcnv2_ta", n_users=6, n_items=N_ITEMS, n_cates=N_CATES, embed_dim=4, max_seq_len=L,
                mlp_dims=(8,), attention_dims=(8,), attention_pooling=pooling, dropout=0.0)
    torch.manual_seed(0)
    full = build_ctr_model(ModelConfig(**base)).eval()
    sim = build_ctr_model(ModelConfig(**base, attention="sim", sim_top_k=top_k)).eval()
    sim.load_state_dict(full.state_dict())
    return full, sim


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_sim_with_k_covering_the_history_equals_full_target_attention(pooling: str) -> None:
    L = 20
    full, sim = ta_twin(L, top_k=L, pooling=pooling)
    batch = ctr_batch(5, L, [20, 13, 1, 0, 7])
    torch.testing.assert_close(sim(batch), full(batch), rtol=1e-5, atol=1e-6)
    full.train(), sim.train()  # the training form of the attention MLP too
    torch.testing.assert_close(sim(batch), full(batch), rtol=1e-5, atol=1e-6)


def test_sim_never_attends_padding_or_unselected_behaviours() -> None:
    L, K = 20, 3
    _, sim = ta_twin(L, top_k=K)
    batch = ctr_batch(4, L, [20, 13, 2, 0])
    noisy = dict(batch, hist_item=batch["hist_item"].clone())
    noisy["hist_item"][torch.arange(L) >= batch["hist_len"][:, None]] = 9
    noisy["hist_cate"] = torch.where(torch.arange(L) < batch["hist_len"][:, None], batch["hist_cate"], 4)
    torch.testing.assert_close(sim(noisy), sim(batch), rtol=0, atol=1e-6)
    wider = dict(batch, hist_item=F.pad(batch["hist_item"], (0, 30)), hist_cate=F.pad(batch["hist_cate"], (0, 30)))
    torch.testing.assert_close(sim(wider), sim(batch), rtol=0, atol=1e-6)  # more padding columns: the same
    # an old behaviour of another category than the target's is not retrieved: the attention ignores it
    # (only the history mean beside the attention changes, so compare the attention part of x0)
    inputs = sim.backbone.inputs
    x0 = inputs(batch)
    idx, _ = category_top_k(batch["hist_cate"], torch.arange(L)[None] < batch["hist_len"][:, None], batch["cate"], K)
    row, pos = 0, next(p for p in range(L) if p not in idx[0].tolist())
    moved = dict(batch, hist_item=batch["hist_item"].clone())
    moved["hist_item"][row, pos] = (batch["hist_item"][row, pos] - 2 + 5) % (N_ITEMS - 2) + 2
    E2 = 2 * 4
    attended = slice(x0.shape[1] - E2, x0.shape[1])  # the target-attention slot is last (no extra input)
    torch.testing.assert_close(inputs(moved)[row, attended], x0[row, attended], rtol=0, atol=1e-7)


# -- cost -----------------------------------------------------------------------------------------

def attention_cells_of(model: GenCTR, L: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Score cells the decoder asks ``scaled_dot_product_attention`` for, one sequence of length L."""
    cells = []
    sdpa = F.scaled_dot_product_attention

    def counting(q: torch.Tensor, k: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        cells.append(q.shape[:-1].numel() * k.shape[-2])  # [..., Tq, hd] x [..., Tk, hd] -> [..., Tq, Tk]
        return sdpa(q, k, *args, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    item, cate, length = sequences(L, [L])
    with torch.no_grad():
        model(item, cate, length)
    monkeypatch.undo()
    return sum(cells)


def test_windowed_cost_grows_linearly_and_full_cost_quadratically(monkeypatch: pytest.MonkeyPatch) -> None:
    Ls, W = (128, 256, 512, 1024), 16
    full = [attention_cells_of(GenCTR(decoder_cfg(L)), L, monkeypatch) for L in Ls]
    win = [attention_cells_of(GenCTR(decoder_cfg(L, "window", W)), L, monkeypatch) for L in Ls]
    assert full == [2 * L * L for L in Ls]  # 2 heads, every (query, key) cell
    assert win == [2 * attention_cells(L, W) for L in Ls]  # the cost model the benchmarks report
    for a, b in zip(win, win[1:], strict=False):
        assert b == 2 * a  # doubling L doubles the work ...
    assert win[-1] * 20 < full[-1]  # ... and at L = 1024 it is 1/30 of full attention's


def test_sim_attends_k_cells_per_candidate_whatever_the_length() -> None:
    seen: list[int] = []
    for L in (64, 256, 1024):
        _, sim = ta_twin(L, top_k=8)
        attention = next(m for m in sim.modules() if isinstance(m, TargetAttention))
        attention.register_forward_pre_hook(lambda _m, args: seen.append(args[1].shape[1]))  # seq [B, K, 2E]
        with torch.no_grad():
            sim(ctr_batch(3, L, [L, L // 2, 3]))
    assert seen == [8, 8, 8]


# -- config, artifacts and serving ------------------------------------------------------------------

def test_config_options_are_validated_and_default_to_full() -> None:
    cfg = ModelConfig()
    assert (cfg.attention, cfg.decoder.attention) == ("full", "full")
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("attention", "sim_top_k")}
    old["decoder"] = {k: v for k, v in old["decoder"].items() if k not in ("attention", "window")}
    loaded = from_dict(ModelConfig, old)  # a config written before the options existed
    assert (loaded.attention, loaded.decoder.attention) == ("full", "full")
    with pytest.raises(ConfigError, match="model.attention"):
        ModelConfig(backbone="dcnv2_ta", attention="linear")
    with pytest.raises(ConfigError, match="backbone dcnv2_ta"):
        ModelConfig(backbone="dnn", attention="sim")
    with pytest.raises(ConfigError, match="model.sim_top_k"):
        ModelConfig(backbone="dcnv2_ta", attention="sim", sim_top_k=0)
    with pytest.raises(ConfigError, match="model.decoder.attention"):
        ModelConfig(decoder={"attention": "sparse"})
    with pytest.raises(ConfigError, match="model.decoder.window"):
        ModelConfig(decoder={"attention": "window", "window": 0})


def test_artifact_config_selects_the_option_and_serving_chunks_by_it(tmp_path: Path) -> None:
    from genctr.artifacts.files import save_artifact
    from genctr.artifacts.kinds import KIND_CTR, KIND_GENCTR
    from genctr.artifacts.load import load_model

    L = 300
    cfg = ModelConfig(backbone="dcnv2_ta", n_users=6, n_items=N_ITEMS, n_cates=N_CATES, embed_dim=4, max_seq_len=L,
                      mlp_dims=(8,), attention_dims=(8,), attention="sim", sim_top_k=16, transfer="integrate",
                      decoder={"d_model": 8, "n_heads": 2, "attention": "window", "window": 8})
    torch.manual_seed(0)
    model = build_ctr_model(cfg, GenCTR(cfg, ITEM_CATE)).eval()
    save_artifact(tmp_path / "m", model, {"kind": KIND_CTR, "model": dataclasses.asdict(cfg)}, None, {})
    loaded = load_model(tmp_path / "m")
    # the ignore below: load_model's return type is a union of the model classes
    assert loaded.backbone.inputs.top_k == 16 and loaded.decoder.window == 8  # type: ignore[union-attr]
    one = ctr_batch(1, L, [L])
    batch = {k: (v.expand(100, *v.shape[1:]) if k.startswith("hist") else v.repeat(100)) for k, v in one.items()}
    batch["cate"] = ITEM_CATE[torch.arange(100) % (N_ITEMS - 2) + 2]
    calls = []
    loaded.register_forward_pre_hook(lambda _m, args: calls.append(args[0]["item"].shape[0]))
    pctr = Forward(loaded)(batch)
    assert calls == [100]  # 100 x min(L, K) = 1600 cells: one call, not 100 x L / 8192 = 4
    with torch.no_grad():
        expected = torch.sigmoid(model(batch)).numpy()
    np.testing.assert_allclose(pctr, expected, rtol=1e-5, atol=1e-6)
    genctr = GenCTR(decoder_cfg(12, "window", 5))  # pretraining artifacts carry the decoder option too
    save_artifact(tmp_path / "g", genctr, {"kind": KIND_GENCTR, "model": dataclasses.asdict(genctr.cfg)}, None, {})
    # the ignore below: load_model's return type is a union of the model classes
    assert load_model(tmp_path / "g").window == 5  # type: ignore[union-attr]


# -- L = 2000 end to end: feature build, batches, model, predictor ----------------------------------

LONG_L = 2000
LONG_USERS = {1: 2300, 2: 2150, 3: 2600, 4: 40}  # impressions per user; ~97 % clicked, so > 2000 behaviours


def long_events(seed: int = 0) -> pd.DataFrame:
    """Canonical events of users with thousands of impressions, one second apart (a strict order)."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.full(n, u) for u, n in LONG_USERS.items()])
    t = np.concatenate([np.arange(n) for n in LONG_USERS.values()])
    items = rng.integers(1, 300, len(users))
    return pd.DataFrame({
        "request_id": np.arange(len(users), dtype="int64") + 1, "user_id": users.astype("int64"),
        "item_id": items.astype("int64"), "category_id": (items % 13).astype("int64"),
        "event_time": (1_600_000_000 + t).astype("int64"),
        "clicked": (rng.random(len(users)) < 0.97).astype("int8"), "price": np.round(rng.random(len(users)), 2),
    })


@pytest.fixture(scope="module")
def long_build(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from genctr.config import FeatureConfig
    from genctr.features.spark_build import build_features

    root = tmp_path_factory.mktemp("long")
    events = long_events()
    events.to_parquet(root / "events.parquet", index=False)
    stats = build_features(root / "events.parquet", root / "build",
                           FeatureConfig(max_seq_len=LONG_L, shuffle_partitions=2), spark=spark)
    return {"root": root, "build": root / "build", "events": events, "stats": stats}


@pytest.mark.slow
def test_build_at_2000_keeps_the_last_2000_behaviours_in_order(long_build: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    from genctr.features.layout import OOV, BuildLayout
    from genctr.training.data import FeatureData

    lay, ev = BuildLayout(long_build["build"]), long_build["events"]
    assert long_build["stats"]["max_seq_len"] == LONG_L
    clicks = ev[ev.clicked == 1].sort_values("event_time")
    feast = pd.read_parquet(lay.feast_user).set_index("user_id")
    for u in LONG_USERS:  # Feast's sequence: the last 2000 behaviours, oldest first
        mine = clicks[clicks.user_id == u]
        assert feast.loc[u, "item_seq"].tolist() == mine.item_id.tolist()[-LONG_L:]
        assert feast.loc[u, "cate_seq"].tolist() == mine.category_id.tolist()[-LONG_L:]
        assert feast.loc[u, "seq_len"] == min(len(mine), LONG_L)
    assert max(len(s) for s in feast["item_seq"]) == LONG_L

    data = FeatureData(str(lay.root), LONG_L)
    test = data.splits["test"]
    samples = pq.read_table(lay.samples("test")).to_pandas()  # the rows of ``test``, in its order
    assert (samples["seq_len"] == np.minimum(samples["hist_end"], LONG_L)).all()
    row = int(torch.argmax(test.seq_len))  # a sample that sees a full 2000
    assert int(test.seq_len[row]) == LONG_L
    batch = data.batch(test, torch.tensor([row]))
    mine = clicks[(clicks.user_id == samples["user_id"][row]) & (clicks.event_time < samples["event_time"][row])]
    vocab = pd.read_parquet(lay.vocab("item")).set_index("raw_id")["idx"]
    expected = [int(vocab.get(i, OOV)) for i in mine.item_id.tolist()[-LONG_L:]]  # unseen in training -> OOV
    assert batch["hist_len"].tolist() == [LONG_L] and batch["hist_item"][0].tolist() == expected


@pytest.mark.slow
def test_models_train_and_serve_100_candidates_at_2000(long_build: dict[str, Any], tmp_path: Path) -> None:
    from genctr.artifacts.files import save_artifact
    from genctr.artifacts.kinds import KIND_CTR
    from genctr.serving.predictor import CTRPredictor
    from genctr.serving.request import Limits, parse_v1
    from genctr.training.data import FeatureData

    data = FeatureData(str(long_build["build"]), LONG_L)
    sizes = data.vocab_sizes
    cfg = ModelConfig(backbone="dcnv2_ta", max_seq_len=LONG_L, attention="sim", transfer="integrate",
                      mlp_dims=(16,), decoder={"d_model": 16, "n_heads": 2, "attention": "window", "window": 32}
                      ).with_vocab(sizes["user"], sizes["item"], sizes["category"])
    torch.manual_seed(0)
    pretrained = GenCTR(cfg, data.item_categories())
    ends, lengths = data.pretrain_windows(cfg.window_stride())
    seq = data.sequence_batch(ends[:4], lengths[:4])
    assert int(seq["seq_len"].max()) == LONG_L
    logits, valid = pretrained.pretrain_logits(seq)  # [4 * 2000, 1 + K]
    (-torch.log_softmax(logits[valid], -1)[:, 0].mean()).backward()
    model = build_ctr_model(cfg, pretrained)
    train = data.splits["train"]
    batch = data.batch(train, torch.argsort(train.seq_len, descending=True)[:8])
    assert int(batch["hist_len"].max()) == LONG_L
    out = model(batch)
    F.binary_cross_entropy_with_logits(out, batch["label"]).backward()
    assert out.shape == (8,) and torch.isfinite(out).all()

    model.eval()
    save_artifact(tmp_path / "m", model, {"kind": KIND_CTR, "model": dataclasses.asdict(cfg)}, long_build["build"], {})
    clicks = long_build["events"].query("user_id == 3 and clicked == 1")
    history = {"item_seq": clicks.item_id.tolist(), "cate_seq": clicks.category_id.tolist()}  # > 2000 raw ids
    cands = [{"item_id": int(i), "category_id": int(i % 13), "price": 0.5} for i in range(1, 101)]
    payload = {"instances": [{"user_id": 3, "candidates": cands, "history": history}]}
    limits = Limits(max_history=len(clicks))
    predictor = CTRPredictor("long", tmp_path / "m", None, limits=limits)
    predictor.load()
    req = parse_v1(payload, limits)
    served = predictor.batch(req)
    assert served["hist_item"].shape == (100, LONG_L) and served["hist_item"].stride(0) == 0  # the last 2000, shared
    pctr = predictor.score(req)
    with torch.no_grad():
        expected = torch.sigmoid(model({k: v.contiguous() for k, v in served.items()})).numpy()
    np.testing.assert_allclose(pctr, expected, rtol=1e-4, atol=1e-6)
    assert pctr.shape == (100,)


@pytest.mark.slow
def test_feast_serves_the_last_2000_behaviours(long_build: dict[str, Any], tmp_path: Path) -> None:
    from genctr.features.feast_sync import get_online_sequences, materialize

    store = materialize(long_build["build"], online="sqlite", work_dir=tmp_path / "feast")
    got = get_online_sequences(store, list(LONG_USERS))
    clicks = long_build["events"].query("clicked == 1").sort_values("event_time")
    for u in LONG_USERS:
        mine = clicks[clicks.user_id == u]
        assert got[u]["item_seq"] == mine.item_id.tolist()[-LONG_L:]  # Array(Int64) of 2000, in order
        assert got[u]["cate_seq"] == mine.category_id.tolist()[-LONG_L:]
        assert got[u]["seq_len"] == min(len(mine), LONG_L)


def test_the_benchmarks_auc_cells_are_parsed_and_a_bad_one_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    args = bench.parse_args(["--auc-cells", "200:full", "2000:sub"])
    assert bench.auc_arms(args) == [(200, "full"), (2000, "sub")]
    assert bench.auc_arms(bench.parse_args(["--quick"])) == [(200, "full"), (2000, "sub")]
    assert len(bench.auc_arms(bench.parse_args([]))) == len(bench.LENGTHS) * len(bench.ARMS)
    with pytest.raises(SystemExit) as exit_:  # at parse time, before any part runs
        bench.parse_args(["--auc-cells", "2000:fast"])
    assert exit_.value.code == 2 and "'2000:fast' is not L:ARM" in capsys.readouterr().err


def _bench_module():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "long_sequences.py"
    spec = importlib.util.spec_from_file_location("long_sequences_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _run_json(path: Path, rows: list[tuple[int, str, int, float]], **settings: Any) -> Path:
    import json

    base = {"category": "combo", "pt_steps": 150, "ft_steps": 0, "ft_epochs": 4, "batch_size": 256,
            "pt_batch_size": 64, "device": "cpu", "quick": False, "window": 64, "top_k": 64}
    path.write_text(json.dumps({"auc": [{"L": L, "arm": arm, "seed": seed, "auc": auc} for L, arm, seed, auc in rows],
                                "meta": {"settings": {**base, **settings}}}))
    return path


def test_merged_auc_runs_pair_by_seed_and_refuse_mixed_settings(tmp_path: Path) -> None:
    import json

    bench = _bench_module()
    # full attention's rows came from a run whose (unused) sub settings were the defaults
    full = _run_json(tmp_path / "full.json", [(200, "full", 0, 0.760), (200, "full", 1, 0.770)])
    sub = _run_json(tmp_path / "sub.json", [(2000, "sub", 0, 0.765), (2000, "sub", 1, 0.766)], window=200, top_k=200)
    more = _run_json(tmp_path / "more.json", [(200, "full", 2, 0.750), (2000, "sub", 2, 0.752)], window=200, top_k=200)
    out = tmp_path / "merged.json"
    assert bench.main(["--merge", str(full), str(sub), str(more), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    cell = {(r["L"], r["arm"]): r for r in merged["auc_summary"]}
    assert cell[(200, "full")]["seeds"] == cell[(2000, "sub")]["seeds"] == 3
    assert cell[(2000, "sub")]["delta_vs_full_L200"] == pytest.approx((0.005 - 0.004 + 0.002) / 3, abs=1e-5)
    assert merged["targets"]["auc_sub_2000_vs_full_200"]["met"] is True
    assert merged["merged"]["window"] == 200 and len(merged["merged"]["from"]) == 3

    other_sub = _run_json(tmp_path / "w64.json", [(2000, "sub", 3, 0.7)])  # window 64: another function
    with pytest.raises(SystemExit, match="the sub arm of"):
        bench.main(["--merge", str(sub), str(other_sub), "--out", str(tmp_path / "x.json")])
    # file@L:ARM takes one cell of a run: full attention's row of a run whose sub arm was another function
    both = _run_json(tmp_path / "both.json", [(200, "full", 0, 0.760), (2000, "sub", 0, 0.7)])
    assert bench.main(["--merge", f"{both}@200:full", str(sub), "--out", str(out)]) == 0
    cell = {(r["L"], r["arm"]): r for r in json.loads(out.read_text())["auc_summary"]}
    assert cell[(2000, "sub")]["seeds"] == 2 and cell[(2000, "sub")]["auc_mean"] == pytest.approx(0.7655)
    budget = _run_json(tmp_path / "pt300.json", [(200, "full", 3, 0.7)], pt_steps=300)
    with pytest.raises(SystemExit, match="pt_steps=300"):
        bench.main(["--merge", str(full), str(budget), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="seed 0 is in two"):
        bench.main(["--merge", str(full), str(full), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()  # a refused merge writes nothing
