"""The training loop's optional modes: ``torch.compile`` and bf16 autocast.

No GPU here: the compiled path runs through inductor's CPU backend, and the mixed-precision
path through CPU bf16 autocast, the same autocast machinery the CUDA path enables. What
they check is the plumbing every model shares with the GPU run: dtypes through
concatenations, float32 losses and scores, methods other than ``forward`` being compiled.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

import genctr.training.loop as loop
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.run import evaluate_split, init_ctr, score, train_ctr, train_genctr
from genctr.training.run_dgenctr import init_dgenctr_ctr, train_dgenctr


@pytest.fixture(scope="module")
def data(synthetic_build) -> FeatureData:
    return FeatureData(str(synthetic_build["build"]), synthetic_build["max_seq_len"])


def _small(backbone: str, L: int, **kw) -> ModelConfig:
    return ModelConfig(backbone=backbone, max_seq_len=L, mlp_dims=(32, 16), attention_dims=(16,), dropout=0.0, **kw)


def test_compiled_training_matches_eager(data: FeatureData) -> None:
    # dropout 0: inductor draws its own random numbers, so only a deterministic step can match
    weights, losses = [], []
    for compile_ in (False, True):
        model = init_ctr(data, _small("dcnv2_ta", data.max_seq_len), None, seed=0)
        hist = train_ctr(data, model, TrainConfig(epochs=1, batch_size=4096, seed=0, compile=compile_, progress=False))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        losses.append(hist[-1]["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for k, eager in weights[0].items():
        torch.testing.assert_close(weights[1][k], eager, rtol=1e-3, atol=1e-4, msg=k)
    assert any(not torch.equal(weights[0][k], v) for k, v in
               init_ctr(data, _small("dcnv2_ta", data.max_seq_len), None, seed=0).state_dict().items())


def test_the_short_last_batch_does_not_recompile_the_objective(data: FeatureData, monkeypatch) -> None:
    # A compiled graph for every batch shape: the epoch's short last batch would make dynamo compile
    # the objective a second time, with a symbolic batch size, which the full batches then ran.
    rows = len(data.splits["train"])
    batch = 4096 if rows % 4096 else 4000
    assert rows > batch and rows % batch, "the test needs a short last batch"
    graphs: list[list[object]] = []

    def backend(gm, example_inputs):  # records what each compilation was for, then runs its graph eagerly
        graphs.append([d for t in example_inputs if isinstance(t, torch.Tensor) for d in t.shape[:1]])
        return gm.forward

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: real(fn, backend=backend))
    torch._dynamo.reset()
    model = init_ctr(data, _small("dcnv2_ta", data.max_seq_len), None, seed=0)
    hist = train_ctr(data, model, TrainConfig(epochs=2, batch_size=batch, seed=0, compile=True, progress=False))
    torch._dynamo.reset()
    assert hist[-1]["rows"] == rows  # the short batch was trained on
    assert graphs, "the objective was not compiled"
    sizes = {d for g in graphs for d in g}
    assert all(isinstance(d, int) for d in sizes), f"a graph with a symbolic batch size: {sizes}"
    assert rows % batch not in sizes, f"the short batch ({rows % batch} rows) was compiled: {sizes}"
    assert batch in sizes
    # an epoch of one batch has no full batch beside it: that one is compiled
    graphs.clear()
    train_ctr(data, init_ctr(data, _small("dnn", data.max_seq_len), None, seed=0),
              TrainConfig(epochs=1, batch_size=rows + 1, seed=0, compile=True, progress=False))
    torch._dynamo.reset()
    assert rows in {d for g in graphs for d in g}


def test_compile_covers_pretraining_objectives(data: FeatureData, monkeypatch) -> None:
    # Pretraining calls ``pretrain_logits``, not ``forward``: the compiled callable must be the
    # objective, or pretraining would silently run eager.
    compiled: list[str] = []
    real = torch.compile

    def spy(fn, *a, **kw):
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return real(fn, *a, **kw)

    monkeypatch.setattr(torch, "compile", spy)
    _, hist = train_genctr(data, ModelConfig(max_seq_len=data.max_seq_len, decoder={"d_model": 16, "dropout": 0.0}),
                           TrainConfig(epochs=1, batch_size=2048, seed=0, compile=True, progress=False))
    assert compiled == ["genctr_objective"]
    assert torch.isfinite(torch.tensor(hist[-1]["train_loss"]))


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Turn the loop's autocast on for CPU: bf16 like the CUDA path (which this box lacks)."""
    used: list[torch.dtype | None] = []

    def autocast(device, cfg):
        if not cfg.amp:
            return contextlib.nullcontext()
        used.append(torch.bfloat16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(loop, "autocast", autocast)
    return used


def test_bf16_autocast_trains_every_model_family(data: FeatureData, cpu_bf16, tmp_path) -> None:
    L = data.max_seq_len
    quick = TrainConfig(epochs=1, batch_size=2048, seed=0, progress=False)
    pre, hist = train_genctr(data, ModelConfig(max_seq_len=L, decoder={"d_model": 16}), quick)
    assert torch.isfinite(torch.tensor(hist[-1]["train_loss"]))
    # 16 steps at lr 1e-3 leave even the plain backbone near chance (AUC ~0.52): fine-tune at 1e-2
    tune = TrainConfig(epochs=1, batch_size=2048, lr=1e-2, seed=0, progress=False)
    for backbone in ("dnn", "dcnv2", "dcnv2_ta"):
        model = init_ctr(data, _small(backbone, L, transfer="integrate", decoder={"d_model": 16}), pre, seed=0)
        train_ctr(data, model, tune)
        assert np.isfinite(score(model, data, "test")).all(), backbone
        assert evaluate_split(model, data, "test")["auc"] > 0.55, backbone  # it learnt in bf16
    dg_cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=32)
    # in-batch scoring: (B, B) logits per field, so a smaller batch is the cheaper epoch
    dg, hist = train_dgenctr(data, dg_cfg, dataclasses.replace(quick, batch_size=1024), tmp_path)
    assert torch.isfinite(torch.tensor(hist[-1]["train_loss"]))
    ft = init_dgenctr_ctr(data, dg_cfg, dg, seed=0)
    train_ctr(data, ft, quick)
    assert np.isfinite(score(ft, data, "test")).all()
    assert len(cpu_bf16) >= 5  # autocast really wrapped the steps
