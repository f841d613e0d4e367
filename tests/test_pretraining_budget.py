"""Pretraining budget: windows that predict every behaviour with context, step budgets, held-out
early stopping and the pretraining diagnostics (on a tiny pandas-written build, no Spark)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_build import write_tiny_build

from genctr.errors import ConfigError
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.loop import fit, step_budget
from genctr.training.run import train_genctr
from genctr.training.run_dgenctr import train_dgenctr
from genctr.training.windows import heldout_windows, strided_windows

L = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> FeatureData:
    return FeatureData(str(write_tiny_build(tmp_path_factory.mktemp("tiny") / "build", L)), L)


def best_context(n: np.ndarray, user: np.ndarray, end: np.ndarray, length: np.ndarray) -> list[np.ndarray]:
    """Per user, the most context (behaviours before it in the window) any window gives each of
    its first n[u] behaviours; -1 = never predicted."""
    best = [np.full(int(k), -1) for k in n]
    for u, e, ln in zip(user, end, length, strict=True):
        pos = np.arange(e - ln, e)
        best[u][pos] = np.maximum(best[u][pos], pos - (e - ln))
    return best


def test_every_training_behaviour_is_predicted_with_its_context(data: FeatureData) -> None:
    """Non-overlapping windows predicted each window's first behaviour from nothing (context 0 at
    positions >= L); with overlap 0.5 every behaviour at position p gets min(p, L/2) context."""
    stride = ModelConfig(max_seq_len=L).window_stride()
    assert stride == L // 2
    ends, lengths = data.pretrain_windows(stride)
    n = data.n_train_behaviors
    assert int(lengths.sum()) >= int(n.sum())  # predicted positions per epoch cover the training period
    start = torch.as_tensor(data._user_start)
    user = (torch.searchsorted(start, ends - lengths, right=True) - 1).numpy()
    local_end = (ends - start[user]).numpy()
    assert (local_end <= n[user]).all() and (lengths.numpy() <= L).all()  # training behaviour only
    for u, ctx in enumerate(best_context(n, user, local_end, lengths.numpy())):
        p = np.arange(n[u])
        assert (ctx >= np.minimum(p, L - stride)).all(), (u, ctx)


def test_strided_windows_cover_users_of_every_length() -> None:
    n = np.array([0, 1, 2, 7, 8, 9, 16, 17, 33, 200])
    for max_len, stride in ((8, 4), (8, 8), (8, 1), (50, 25)):
        user, end, length = strided_windows(n, max_len, stride)
        assert (length >= 1).all() and (length <= max_len).all() and (end - length >= 0).all()
        for u, ctx in enumerate(best_context(n, user, end, length)):
            p = np.arange(n[u])
            assert (ctx >= np.minimum(p, max_len - stride)).all(), (max_len, stride, u)
    with pytest.raises(ValueError, match="stride"):
        strided_windows(n, 8, 9)


def test_heldout_windows_predict_each_target_once_with_context() -> None:
    first, n_targets = np.array([0, 3, 20, 5]), np.array([4, 0, 9, 1])
    user, end, length, target_from = heldout_windows(first, n_targets, 8, 4)
    seen = [[] for _ in first]
    for u, e, ln, t0 in zip(user, end, length, target_from, strict=True):
        pos = np.arange(e - ln, e)[t0:]
        assert (pos >= first[u]).all() and (pos - (e - ln) >= np.minimum(pos, 4)).all()  # >= L - chunk context
        seen[u] += pos.tolist()
    for u in range(len(first)):
        assert sorted(seen[u]) == list(range(first[u], first[u] + n_targets[u]))  # each target exactly once


class _Counter(torch.nn.Module):
    """One weight; counts the optimizer steps through the objective."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _count_steps(tmp_path: Path, **train: object) -> tuple[list[int], list[dict]]:
    sizes: list[int] = []

    def objective(model, batch, gen):
        sizes.append(len(batch["x"]))
        return (model.w - 1).pow(2).sum()

    history = fit(_Counter(), objective, 512, lambda idx: {"x": idx}, TrainConfig(batch_size=64, progress=False,
                  **train), tmp_path / "ckpt")
    return sizes, history


@pytest.mark.parametrize(("max_steps", "epochs", "passes"), [(7, 1, 1), (20, 1, 3), (0, 2, 2), (16, 9, 2)])
def test_the_step_budget_is_honoured(tmp_path, max_steps: int, epochs: int, passes: int) -> None:
    sizes, history = _count_steps(tmp_path, max_steps=max_steps, epochs=epochs)
    want = max_steps or epochs * 8  # 512 rows / 64 = 8 steps a pass
    assert len(sizes) == want and history[-1]["steps"] == want and len(history) == passes
    assert step_budget(512, TrainConfig(batch_size=64, max_steps=max_steps, epochs=epochs)) == (want, passes)
    assert sum(r["rows"] for r in history) == sum(sizes)


def test_pretraining_history_holds_heldout_loss_and_auc_vs_popularity(data: FeatureData) -> None:
    cfg = ModelConfig(max_seq_len=L, n_negatives=4, decoder={"d_model": 16, "n_heads": 2, "dropout": 0.0})
    _, history = train_genctr(data, cfg, TrainConfig(max_steps=6, batch_size=16, lr=3e-3, progress=False))
    assert [r["epoch"] for r in history] == [0, 1, 2] and history[-1]["steps"] == 6  # 4 steps/pass
    for row in history:
        assert row["heldout_targets"] > 0 and math.isfinite(row["heldout_loss"])
        assert 0.0 <= row["heldout_auc"] <= 1.0 and 0.0 <= row["heldout_pop_auc"] <= 1.0
    assert history[0]["heldout_pop_auc"] == history[-1]["heldout_pop_auc"]  # same candidates every time
    assert history[-1]["heldout_loss"] < history[0]["heldout_loss"]  # it learnt


def test_pretraining_early_stops_on_the_heldout_loss(data: FeatureData, tmp_path) -> None:
    cfg = ModelConfig(max_seq_len=L, n_negatives=4, decoder={"d_model": 16, "n_heads": 2, "dropout": 0.0})
    # lr 0.3 overshoots: the held-out loss stops improving within a few passes of the 60-step budget
    _, history = train_genctr(data, cfg, TrainConfig(max_steps=60, batch_size=16, lr=0.3, patience=1,
                                                     progress=False), tmp_path)
    trained = [r for r in history if r["epoch"] >= 1]
    best = min(trained, key=lambda r: r["heldout_loss"])
    assert history[-1]["steps"] < 60 and len(trained) == best["epoch"] + 1  # one epoch past the best


def test_dgenctr_pretraining_logs_the_label_loss(data: FeatureData, tmp_path) -> None:
    cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=16, timesteps=10)
    _, history = train_dgenctr(data, cfg, TrainConfig(max_steps=3, batch_size=128, progress=False), tmp_path)
    assert history[0]["epoch"] == 0 and abs(history[0]["heldout_ce_label"] - math.log(2)) < 0.05
    assert all(math.isfinite(r["heldout_loss"]) for r in history) and history[-1]["steps"] == 3


def test_dgenctr_pretraining_logs_the_networks_ctr_auc_before_fine_tuning(data: FeatureData, tmp_path) -> None:
    # The diagnostic is the AUC of the network read as a CTR model (label masked, the rest shown) on
    # the valid split, as evaluate_split scores a fine-tuned one; and it moves as pretraining learns
    # the label from the other fields (lr 0.01 over 30 steps of the tiny build's labelled impressions).
    from genctr.training.run import evaluate_split

    cfg = DGenCTRConfig(embed_dim=16, n_layers=1, n_heads=2, head_hidden=16, timesteps=10, dropout=0.0)
    model, history = train_dgenctr(data, cfg, TrainConfig(max_steps=30, batch_size=128, lr=1e-2, progress=False),
                                   tmp_path)
    assert history[-1]["heldout_ctr_auc"] == pytest.approx(evaluate_split(model, data, "valid")["auc"], abs=1e-9)
    assert history[-1]["heldout_ctr_auc"] != pytest.approx(history[0]["heldout_ctr_auc"], abs=1e-3)


def test_patience_without_a_heldout_metric_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="patience"):
        _count_steps(tmp_path, patience=2)


@pytest.mark.parametrize(("cls", "field", "value"), [
    (TrainConfig, "max_steps", -1), (TrainConfig, "patience", -1), (TrainConfig, "transfer_freeze_steps", -2),
    (TrainConfig, "transfer_lr_mult", -0.1), (TrainConfig, "label_fraction", 0.0),
    (TrainConfig, "label_fraction", 1.5), (TrainConfig, "label_sampling", "session"),
    (TrainConfig, "early_stop_metric", "gauc"), (TrainConfig, "max_steps", True),
    (ModelConfig, "window_overlap", 1.0), (ModelConfig, "window_overlap", -0.5),
    (ModelConfig, "integration_scale", "auto"), (ModelConfig, "logq_correction", "yes"),
    (DGenCTRConfig, "full_softmax_vocab", 1),
])
def test_new_options_are_validated(cls: type, field: str, value: object) -> None:
    from genctr.config import from_dict

    section = {TrainConfig: "train", ModelConfig: "model", DGenCTRConfig: "dgenctr"}[cls]
    with pytest.raises(ConfigError, match=rf"{section}\.{field}\b"):
        from_dict(cls, {field: value}, section)


def test_new_option_defaults() -> None:
    t, m, d = TrainConfig(), ModelConfig(), DGenCTRConfig()
    assert (t.max_steps, t.patience, t.early_stop_metric, t.transfer_lr_mult, t.transfer_freeze_steps,
            t.label_fraction, t.label_sampling) == (0, 0, "logloss", 1.0, 0, 1.0, "impression")
    assert (m.window_overlap, m.logq_correction, m.integration_scale, d.full_softmax_vocab) == (0.5, None, "none", 64)
    assert m.uses_logq is False and ModelConfig(negatives="rs").uses_logq is True
    assert ModelConfig(window_overlap=0.0).window_stride(50) == 50 and m.window_stride(50) == 25
