"""Fine-tuning protocol: early stopping that restores the best epoch, the transferred tables' own
learning rate / freeze and their drift, the labelled fraction, and the diagnostics every run writes."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_build import write_tiny_build

from genctr.errors import ConfigError
from genctr.models import GenCTR, ModelConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.diagnostics import embedding_drift, snapshot
from genctr.training.early_stopping import Monitor
from genctr.training.labelled import labelled_rows
from genctr.training.loop import fit
from genctr.training.run import finetune, init_ctr, pretrain, train_ctr, train_genctr

L = 8


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return write_tiny_build(tmp_path_factory.mktemp("tiny") / "build", L)


@pytest.fixture(scope="module")
def data(build: Path) -> FeatureData:
    return FeatureData(str(build), L)


def _small(**kw: object) -> ModelConfig:
    return ModelConfig(max_seq_len=L, mlp_dims=(16,), attention_dims=(8,), n_negatives=4, dropout=0.0,
                       decoder={"d_model": 16, "n_heads": 2, "dropout": 0.0}, **kw)


# ------------------------------------------------------------------ early stopping
class _Line(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))


def test_patience_stops_and_restores_the_best_epochs_weights(tmp_path) -> None:
    script = iter([0.9, 0.5, 0.3, 0.4, 0.35, 0.1, 0.1])  # epoch 0 (untrained), 1, 2, ...: best is epoch 2

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"valid_logloss": next(script)}

    model = _Line()
    history = fit(model, lambda m, b, g: (m.w - b["x"].float().mean()).pow(2).sum(), 64, lambda idx: {"x": idx},
                  TrainConfig(epochs=10, batch_size=16, lr=0.1, patience=2, progress=False), tmp_path,
                  evaluate=evaluate, monitor=Monitor("valid_logloss", "min"), evaluate_at_start=True)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]  # stopped: epochs 3 and 4 did not beat epoch 2
    best = load_file(str(tmp_path / "epoch-0001" / "model.safetensors"))  # end of epoch 2
    last = load_file(str(tmp_path / "epoch-0003" / "model.safetensors"))
    assert torch.equal(model.w.detach(), best["w"]) and not torch.equal(best["w"], last["w"])
    again = _Line()  # a rerun over the same checkpoints trains nothing more and ends on the same weights
    fit(again, lambda m, b, g: m.w.sum(), 64, lambda idx: {"x": idx},
        TrainConfig(epochs=10, batch_size=16, lr=0.1, patience=2, progress=False), tmp_path,
        evaluate=evaluate, monitor=Monitor("valid_logloss", "min"))
    assert torch.equal(again.w.detach(), best["w"])


def test_finetuning_early_stops_on_valid_auc(data: FeatureData, tmp_path) -> None:
    model = init_ctr(data, _small(), None, seed=0)
    history = train_ctr(data, model, TrainConfig(epochs=30, batch_size=64, lr=0.05, patience=1,
                                                 early_stop_metric="auc", progress=False), tmp_path)
    aucs = [r["valid_auc"] for r in history if r["epoch"] >= 1]
    best = max(range(len(aucs)), key=aucs.__getitem__)
    assert len(aucs) == best + 2 < 30  # one epoch past the best, far inside the budget


# ------------------------------------------------------------------ transferred tables
def _share(data: FeatureData) -> tuple[torch.nn.Module, GenCTR]:
    cfg = _small(transfer="share")
    torch.manual_seed(0)
    pre, _ = train_genctr(data, _small(), TrainConfig(max_steps=2, batch_size=16, progress=False))
    return init_ctr(data, cfg, pre, seed=0), pre


@pytest.mark.parametrize(("mult", "freeze", "moved"), [(0.0, 0, False), (1.0, 0, True), (1.0, 10, False),
                                                       (1.0, 4, True)])
def test_transfer_lr_multiplier_and_freeze(data: FeatureData, tmp_path, mult: float, freeze: int,
                                           moved: bool) -> None:
    model, pre = _share(data)
    item = "backbone.inputs.embedding.tables.item.weight"
    assert item in model.transferred_tables
    head = model.backbone.head.weight.detach().clone()
    history = train_ctr(data, model, TrainConfig(max_steps=6, batch_size=64, lr=1e-2, transfer_lr_mult=mult,
                                                 transfer_freeze_steps=freeze, progress=False), tmp_path)
    table = model.get_parameter(item)
    assert torch.equal(table, pre.item_embedding.weight) is not moved
    assert not torch.equal(model.backbone.head.weight, head)  # the rest always trains
    drift = history[-1]["drift_cos_item"]
    assert (drift < 1.0) if moved else drift == pytest.approx(1.0, abs=1e-6)
    assert history[0]["drift_cos_item"] == pytest.approx(1.0, abs=1e-6)  # logged from the untrained model on


@pytest.mark.parametrize("group", ["tables", "all"])
def test_dgenctr_transfer_group_freezes_the_copied_network_under_a_fresh_label_head(
        data: FeatureData, tmp_path, group: str) -> None:
    # transfer=encoder, transfer_lr_mult 0: "tables" freezes the copied tables alone, "all" every copied
    # tensor (the transformer too), so only the fresh label table and heads learn: a probe of the network
    from genctr.models.dgenctr_config import DGenCTRConfig
    from genctr.training.run_dgenctr import init_dgenctr_ctr, train_dgenctr

    cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=16, dropout=0.0, timesteps=10)
    pre, _ = train_dgenctr(data, cfg, TrainConfig(max_steps=2, batch_size=64, progress=False), tmp_path / "pt")
    ft_cfg = dataclasses.replace(cfg, transfer="encoder", transfer_group=group)
    model = init_dgenctr_ctr(data, ft_cfg, pre, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_ctr(data, model, TrainConfig(max_steps=6, batch_size=64, lr=1e-2, transfer_lr_mult=0.0,
                                       progress=False), tmp_path / "ft")
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    label_head = {n for n in before if n.startswith("heads.")} | {"embedding.tables.label.weight"}
    assert label_head <= moved  # the fresh head always learns
    assert not moved & set(model.transferred_tables)  # the copied tables are frozen either way
    layers = {n for n in moved if n.startswith("denoiser.")}
    assert (not layers) if group == "all" else layers  # the transformer is frozen only with "all"
    if group == "all":
        assert moved == label_head


@pytest.mark.parametrize("frozen", [False, True])
def test_weight_decay_is_decoupled_and_spares_frozen_tables(frozen: bool) -> None:
    # A weight with no gradient: decoupled decay shrinks it by the factor (1 - lr * wd) each step.
    # Adam's L2 form would add wd * w to its gradient and normalise it, moving it by about lr
    # whatever its size (2.0 -> 1.9 here, not 1.98). A group at lr 0 (frozen tables) never moves.
    from genctr.training.loop import make_optimizer

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 2.0)
    cfg = TrainConfig(lr=0.1, weight_decay=0.1, transfer_lr_mult=0.0 if frozen else 1.0, progress=False)
    opt = make_optimizer(model, cfg, transferred=["weight"])
    (model.weight * 0.0).sum().backward()
    opt.step()
    assert model.weight.item() == pytest.approx(2.0 if frozen else 2.0 * (1 - 0.1 * 0.1), abs=1e-6)


def test_embedding_drift_is_the_mean_row_cosine() -> None:
    model = torch.nn.Embedding(4, 2, padding_idx=0)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    ref = snapshot(model, ("weight",))
    with torch.no_grad():
        model.weight[1] = torch.tensor([0.0, 2.0])  # row 1 turned by 90 degrees: cosine 0
    assert embedding_drift(model, ref) == {"drift_cos_weight": pytest.approx(2 / 3)}  # padding row left out


# ------------------------------------------------------------------ labelled fraction
@pytest.mark.parametrize("unit", ["impression", "user"])
def test_label_fraction_cuts_finetuning_rows_only(data: FeatureData, tmp_path, unit: str) -> None:
    s = data.splits["train"]
    rows = labelled_rows(s, 0.1, unit, seed=3)
    assert 0.05 * len(s) <= len(rows) <= 0.15 * len(s)
    assert torch.equal(rows, labelled_rows(s, 0.1, unit, seed=3))  # seeded
    assert not torch.equal(rows, labelled_rows(s, 0.1, unit, seed=4))
    if unit == "user":  # whole users: a kept user keeps every one of their impressions
        kept = set(s.user_raw[rows.numpy()].tolist())
        assert sum(u in kept for u in s.user_raw.tolist()) == len(rows)
    full = train_ctr(data, init_ctr(data, _small(), None, seed=0),
                     TrainConfig(epochs=1, batch_size=64, progress=False, label_sampling=unit), tmp_path / "a")
    part = train_ctr(data, init_ctr(data, _small(), None, seed=0),
                     TrainConfig(epochs=1, batch_size=64, progress=False, label_fraction=0.1, label_sampling=unit,
                                 seed=3), tmp_path / "b")
    assert full[-1]["rows"] == len(s) and part[-1]["rows"] == len(rows)
    # the histories of kept rows are those of the full behaviour log, not of the labelled share
    batch, ref = data.batch(s, rows), data.batch(s, torch.arange(len(s)))
    for key in ("hist_item", "hist_cate", "hist_len"):
        assert torch.equal(batch[key], ref[key][rows])
    assert torch.equal(batch["hist_len"], s.seq_len[rows]) and int(batch["hist_len"].sum()) > 0
    # pretraining sees every training-period behaviour whatever the fraction
    _, pre_full = train_genctr(data, _small(), TrainConfig(max_steps=2, batch_size=16, progress=False))
    _, pre_part = train_genctr(data, _small(), TrainConfig(max_steps=2, batch_size=16, label_fraction=0.1,
                                                           progress=False))
    assert pre_full[-1]["rows"] == pre_part[-1]["rows"] > 0


def test_dgenctr_pretraining_hides_labels_outside_the_fraction(data: FeatureData, tmp_path, monkeypatch) -> None:
    from genctr.models.dgenctr import DGenCTR
    from genctr.models.dgenctr_config import DGenCTRConfig
    from genctr.training.run_dgenctr import train_dgenctr

    seen: list[torch.Tensor] = []
    real = DGenCTR.pretrain_logits

    def spy(self, batch, *a, **kw):
        if self.training:
            seen.append(batch["label_known"])
        return real(self, batch, *a, **kw)

    monkeypatch.setattr(DGenCTR, "pretrain_logits", spy)
    cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=16, timesteps=10)
    train_dgenctr(data, cfg, TrainConfig(epochs=1, batch_size=1024, progress=False, label_fraction=0.1), tmp_path)
    known = torch.cat(seen)
    assert len(known) == len(data.splits["train"])  # every impression is a sample ...
    assert int(known.sum()) == len(labelled_rows(data.splits["train"], 0.1, "impression", 0))  # ... 10 % labelled


def test_behaviour_samples_are_every_training_behaviour_with_only_its_past(data: FeatureData) -> None:
    import pyarrow.parquet as pq

    hist = pq.read_table(data.layout.histories).to_pandas()
    beh = data.behaviour_samples()
    assert len(beh) == int(hist["n_train_behaviors"].sum()) > 0
    batch = data.batch(beh, torch.arange(len(beh)))
    user_of = {raw: int(idx) for split in data.splits.values() for raw, idx in zip(split.user_raw, split.user.tolist(),
                                                                                     strict=True)}
    i = 0
    for row in hist.itertuples():
        items = list(row.item_seq)
        for j in range(row.n_train_behaviors):  # only the training prefix of each user's block
            assert int(batch["item"][i]) == items[j]
            n = int(batch["hist_len"][i])
            assert n == min(j, L)
            assert batch["hist_item"][i, :n].tolist() == items[j - n:j]  # the behaviours just before it, no later
            assert int(batch["user"][i]) == user_of.get(row.user_id, 1)
            i += 1


def test_behaviour_samples_carry_their_items_catalogue_price(tmp_path) -> None:
    import pandas as pd

    build = write_tiny_build(tmp_path / "build", L)
    part = build / "items" / "part-0.parquet"
    items = pd.read_parquet(part)
    items["price"] = (items["item_idx"] * 0.5).astype("float32")  # the tiny build's prices are all 0
    items.to_parquet(part)
    data = FeatureData(str(build), L)
    beh = data.behaviour_samples()
    assert len(beh) > 0 and beh.item.min() >= 2
    # an "unknown" price that only behaviours had would tell the denoiser a behaviour from an impression
    assert beh.price.tolist() == pytest.approx((beh.item * 0.5).tolist())


@pytest.mark.parametrize("corpus", ["behaviours", "both"])
def test_dgenctr_behaviour_corpus_shows_only_the_labelled_impressions_labels(data: FeatureData, tmp_path, monkeypatch,
                                                                             corpus: str) -> None:
    from genctr.models.dgenctr import DGenCTR
    from genctr.models.dgenctr_config import DGenCTRConfig
    from genctr.training.run_dgenctr import train_dgenctr

    seen: list[dict[str, torch.Tensor]] = []
    real = DGenCTR.pretrain_logits

    def spy(self, batch, *a, **kw):
        if self.training:
            seen.append({k: batch[k] for k in ("label_known", "item", "hist_len")})
        return real(self, batch, *a, **kw)

    monkeypatch.setattr(DGenCTR, "pretrain_logits", spy)
    cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=16, timesteps=10, pretrain_samples=corpus)
    train_dgenctr(data, cfg, TrainConfig(epochs=1, batch_size=1024, progress=False, label_fraction=0.1), tmp_path)
    known = torch.cat([b["label_known"] for b in seen])
    n_labelled = len(labelled_rows(data.splits["train"], 0.1, "impression", 0))
    n_impressions = n_labelled if corpus == "behaviours" else len(data.splits["train"])
    assert len(known) == n_impressions + len(data.behaviour_samples())  # one epoch: every sample once
    assert int(known.sum()) == n_labelled  # behaviours and unlabelled impressions never show a label


# ------------------------------------------------------------------ what every run records
def test_every_run_writes_its_diagnostics(build: Path, tmp_path) -> None:
    quick = {"max_steps": 3, "batch_size": 32, "progress": False}
    small = {"max_seq_len": L, "n_negatives": 4, "decoder": {"d_model": 16, "n_heads": 2}}
    pre = pretrain(build, tmp_path / "gen", "genctr", small, quick)
    init, final = pre["diagnostics"]["init"], pre["diagnostics"]["final"]
    for row in (init, final):
        assert {"heldout_loss", "heldout_auc", "heldout_pop_auc"} <= set(row)
    out = finetune(build, tmp_path / "ctr",
                   {**small, "transfer": "integrate", "integration_scale": "match", "mlp_dims": [16]}, quick,
                   pretrained=tmp_path / "gen")
    metrics = json.loads((tmp_path / "ctr" / "metrics.json").read_text())
    assert metrics["diagnostics"] == json.loads(json.dumps(out["diagnostics"]))
    d = metrics["diagnostics"]
    assert d["steps"] == 3 and d["init"]["integration_norm_ratio"] == pytest.approx(1.0, rel=0.5)
    assert {"drift_cos_item", "drift_cos_cate", "drift_cos_decoder_item_embedding", "valid_auc"} <= set(d["final"])
    assert all(math.isfinite(v) for k, v in d["final"].items() if k.startswith("drift_cos"))
    dg = pretrain(build, tmp_path / "dgen", "dgenctr", {"max_seq_len": L, "embed_dim": 16, "n_layers": 1,
                                                        "n_heads": 2, "head_hidden": 16}, quick)
    assert abs(dg["diagnostics"]["init"]["heldout_ce_label"] - math.log(2)) < 0.05


@pytest.mark.parametrize("mult", [0.0, 1.0])
def test_decoder_lr_multiplier_freezes_or_trains_the_integrated_decoder(data: FeatureData, tmp_path,
                                                                        mult: float) -> None:
    pre, _ = train_genctr(data, _small(), TrainConfig(max_steps=2, batch_size=64, progress=False))
    model = init_ctr(data, _small(transfer="integrate"), pre, seed=0)
    layers = model.decoder_parameters
    assert layers and all(n.startswith("decoder.") for n in layers) and any(".blocks.0." in n for n in layers)
    # the decoder's own table copies go with the decoder; the backbone's follow transfer_lr_mult
    assert "decoder.item_embedding.weight" in layers
    backbone_table = "backbone.inputs.embedding.tables.item.weight"
    assert backbone_table in model.transferred_tables and backbone_table not in layers
    before = {n: model.get_parameter(n).detach().clone() for n in layers}
    table_before = model.get_parameter(backbone_table).detach().clone()
    train_ctr(data, model, TrainConfig(max_steps=6, batch_size=64, lr=1e-2, decoder_lr_mult=mult, progress=False),
              tmp_path)
    moved = [n for n in layers if not torch.equal(model.get_parameter(n), before[n])]
    # trained: every part the integration feature goes through (not ``head``: pretraining's alone)
    used = {n for n in layers if ".blocks.0." in n} | {"decoder.item_embedding.weight"}
    assert (moved == []) if mult == 0 else used <= set(moved)
    assert not torch.equal(model.get_parameter(backbone_table), table_before)  # transfer_lr_mult 1: it trains
    with pytest.raises(ConfigError, match="train.decoder_lr_mult"):
        TrainConfig(decoder_lr_mult=-1.0)
