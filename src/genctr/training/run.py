"""Pretraining and fine-tuning runs: a feature build in, a model artifact out.

Two levels: ``train_*`` functions work on an already loaded :class:`FeatureData` (the
ablation benchmark reuses one load across many arms); ``pretrain``/``finetune`` read a
build directory and write an artifact directory (what the CLI and the pipeline call).

The path level runs unchanged under ``torchrun``: it opens the data-parallel session
(``distributed.session``: rank, world size, this rank's device), every rank loads the build and
trains its share, and rank 0 alone measures the test split and writes the artifact; every rank
returns the same result.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from genctr.artifacts.files import read_config, save_artifact
from genctr.artifacts.kinds import KIND_CTR, KIND_DGENCTR, KIND_DGENCTR_CTR, KIND_GENCTR
from genctr.artifacts.load import load_model, max_seq_len_of
from genctr.config import from_dict
from genctr.errors import ArtifactError, ConfigError
from genctr.evaluation.metrics import evaluate
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.models.genctr import GenCTR
from genctr.models.losses import sampled_softmax_loss
from genctr.models.transfer import CTRModel, build_ctr_model
from genctr.training import distributed
from genctr.training.checkpoint import clear_checkpoints
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.diagnostics import (
    embedding_drift,
    integration_norm_ratio,
    next_item_heldout,
    snapshot,
    summarize,
)
from genctr.training.early_stopping import Monitor
from genctr.training.labelled import labelled_rows
from genctr.training.loop import fit, predict_logits

if TYPE_CHECKING:
    from genctr.models.dgenctr import DGenCTR

log = logging.getLogger(__name__)

METHODS = ("none", "genctr", "dgenctr")
PROBE_ROWS = 4096  # valid rows the integration norm ratio is measured on
HELDOUT_LOSS = Monitor("heldout_loss", "min")  # what pretraining early-stops on
# Pretraining TrainConfig defaults (for the fields a caller leaves out). GenCTR on MovieLens
# latest-small (L = 50, 1,511 windows at overlap 0.5, batch 64 = 24 steps a pass, lr 1e-3): the
# held-out next-item loss falls from 4.98 to 2.33 in 72 steps, reaches its best (2.27) near step
# 300, and patience 3 ends the run by step ~400; 600 steps leaves room for larger data.
PRETRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "genctr": {"batch_size": 64, "max_steps": 600, "patience": 3},
    "dgenctr": {"epochs": 3},
}


def with_vocab(cfg: ModelConfig, data: FeatureData) -> ModelConfig:
    v = data.vocab_sizes
    return dataclasses.replace(cfg, n_users=v["user"], n_items=v["item"], n_cates=v["category"],
                               max_seq_len=data.max_seq_len)


def _ckpt(ckpt_dir: str | Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if ckpt_dir is not None:
        return Path(ckpt_dir), None
    tmp = tempfile.TemporaryDirectory(prefix="genctr-ckpt-")
    return Path(tmp.name), tmp


def genctr_objective(model: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    # cast: fit hands back the model it trains, train_genctr's GenCTR (a no-op under torch.compile too)
    logits, valid = cast(GenCTR, model).pretrain_logits(batch, gen)
    return sampled_softmax_loss(logits, valid)


def ctr_objective(model: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(batch).float(), batch["label"])


def train_genctr(data: FeatureData, cfg: ModelConfig, train: TrainConfig,
                 ckpt_dir: str | Path | None = None, on_epoch_end=None, fp: str = "") -> tuple[GenCTR, list[dict]]:
    """Next-item pretraining on the training period's (overlapping) behaviour windows.

    The history holds, from the untrained model (epoch 0) on, the held-out next-item loss and
    AUC on the valid period's behaviours and the AUC of item popularity on the same candidates;
    with ``train.patience`` the held-out loss decides when to stop.
    """
    cfg = with_vocab(cfg, data)
    torch.manual_seed(train.seed)
    model = GenCTR(cfg, item_cate=data.item_categories()).to(data.device)
    ends, lengths = data.pretrain_windows(cfg.window_stride())
    if len(ends) == 0:
        raise ConfigError("pretraining: the training period holds no behaviour (no clicked training impression)")
    heldout = data.heldout_windows()
    evaluate = None
    if len(heldout[0]):
        popularity = data.train_item_counts()

        def evaluate(m: nn.Module) -> dict[str, float]:
            return next_item_heldout(cast(GenCTR, m), data, heldout, popularity, train.seed)

    path, tmp = _ckpt(ckpt_dir)
    try:
        history = fit(model, genctr_objective, len(ends),
                      lambda idx: data.sequence_batch(ends[idx], lengths[idx]),
                      train, path, evaluate=evaluate, on_epoch_end=on_epoch_end, desc="pretrain", fingerprint=fp,
                      monitor=HELDOUT_LOSS if evaluate is not None else None, evaluate_at_start=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return model, history


def score(model: nn.Module, data: FeatureData, split: str, batch_size: int = 8192) -> np.ndarray:
    """Logits of every sample of ``split``, in the build's row order."""
    s = data.splits[split]
    return predict_logits(model, len(s), lambda idx: data.batch(s, idx), batch_size).cpu().numpy()


def evaluate_split(model: nn.Module, data: FeatureData, split: str) -> dict[str, float]:
    s = data.splits[split]
    if len(s) == 0:
        return {}
    m = evaluate(s.label.cpu().numpy(), score(model, data, split), s.user_raw, from_logits=True)
    return {k: float(m[k]) for k in ("auc", "logloss", "gauc")}


def init_ctr(data: FeatureData, cfg: ModelConfig, pretrained: GenCTR | None, seed: int) -> nn.Module:
    """A backbone with the configured transfer from ``pretrained`` (seeded init)."""
    torch.manual_seed(seed)
    return build_ctr_model(with_vocab(cfg, data), pretrained).to(data.device)


def finetune_monitor(train: TrainConfig) -> Monitor:
    """The valid metric fine-tuning early-stops on."""
    return Monitor(f"valid_{train.early_stop_metric}", "min" if train.early_stop_metric == "logloss" else "max")


def train_ctr(data: FeatureData, model: nn.Module, train: TrainConfig,
              ckpt_dir: str | Path | None = None, on_epoch_end=None, fp: str = "") -> list[dict]:
    """Fine-tune ``model`` in place with BCE on the train split's labelled share; diagnostics per epoch.

    Rows: ``train.label_fraction`` of the training impressions (histories untouched). Per epoch
    (and for the untrained model, epoch 0): valid AUC / LogLoss / gAUC, the drift of every
    transferred table (``model.transferred_tables``) and, for model integration, the integration
    feature's norm ratio. ``train.patience`` early-stops on ``train.early_stop_metric``.
    """
    s, valid = data.splits["train"], data.splits["valid"]
    rows = labelled_rows(s, train.label_fraction, train.label_sampling, train.seed)  # (K,)
    transferred: tuple[str, ...] = getattr(model, "transferred_tables", ())  # CTRModel and DGenCTR set it
    reference = snapshot(model, transferred)  # the pretrained rows (taken before any resume moves them)
    probe = data.batch(valid, torch.arange(min(PROBE_ROWS, len(valid)), device=data.device)) if len(valid) else None

    def valid_metrics(m: nn.Module) -> dict[str, float]:
        row = {f"valid_{k}": v for k, v in evaluate_split(m, data, "valid").items()}
        row.update(embedding_drift(m, reference))
        ratio = integration_norm_ratio(m, probe) if probe is not None and isinstance(m, CTRModel) else None
        if ratio is not None:
            row["integration_norm_ratio"] = ratio
        return row

    if len(rows) < len(s):
        log.info("fine-tuning on %d of %d training impressions (label_fraction %g by %s)", len(rows), len(s),
                 train.label_fraction, train.label_sampling)
    path, tmp = _ckpt(ckpt_dir)
    try:
        history = fit(model, ctr_objective, len(rows), lambda idx: data.batch(s, rows[idx]), train, path,
                      evaluate=valid_metrics, on_epoch_end=on_epoch_end, desc="finetune",
                      fingerprint=fp, monitor=finetune_monitor(train) if len(valid) else None,
                      transferred=getattr(model, "transfer_group", transferred),  # DGenCTR may widen it
                      decoder=getattr(model, "decoder_parameters", ()),
                      evaluate_at_start=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return history


# -- path level -------------------------------------------------------------------------

def _ckpt_beside(out: str | Path) -> Path:
    """Checkpoints live beside the artifact while it trains and are removed once it is written."""
    return Path(out).with_name(Path(out).name + ".ckpt")


def fingerprint(*parts: Any) -> str:
    """Identity of a run's settings (for resuming only the same run)."""
    import hashlib
    import json

    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else p
                       for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finish(out: str | Path, net: nn.Module, config: dict[str, Any], build: str | Path,
            metrics: dict[str, Any], world: distributed.World = distributed.SINGLE) -> None:
    """Rank 0 writes the artifact and removes the checkpoints; every rank returns once it is written."""
    if world.is_main:
        save_artifact(out, net, config, build, metrics)
        clear_checkpoints(_ckpt_beside(out))  # set-aside corrupt checkpoints stay, with a warning
    distributed.barrier(world)


def pretrain_config(method: str, train: dict[str, Any]) -> TrainConfig:
    """The pretraining TrainConfig: ``train`` over the method's defaults (``PRETRAIN_DEFAULTS``);
    an explicit ``epochs`` keeps its meaning (the default step budget then does not apply)."""
    defaults = dict(PRETRAIN_DEFAULTS.get(method, {}))
    if "epochs" in train:
        defaults.pop("max_steps", None)
    return from_dict(TrainConfig, {**defaults, **train}, "train")


def pretrain(build: str | Path, out: str | Path, method: str, model: dict[str, Any],
             train: dict[str, Any] | TrainConfig) -> dict[str, Any]:
    """Pretrain with ``method`` (genctr | dgenctr) and write the artifact to ``out``.

    ``model`` holds ModelConfig fields for genctr and DGenCTRConfig fields for dgenctr.
    """
    tcfg = train if isinstance(train, TrainConfig) else pretrain_config(method, train)
    if method not in ("genctr", "dgenctr"):
        raise ConfigError(f"pretrain method must be 'genctr' or 'dgenctr', got {method!r}")
    with distributed.session(tcfg.resolve_device()) as (world, device):
        distributed.check_batch(tcfg.batch_size, world)  # before any data is read
        return _pretrain(build, out, method, model, tcfg, world, device)


def _pretrain(build: str | Path, out: str | Path, method: str, model: dict[str, Any], tcfg: TrainConfig,
              world: distributed.World, device: str) -> dict[str, Any]:
    net: GenCTR | DGenCTR
    config: dict[str, Any]
    if method == "genctr":
        cfg = from_dict(ModelConfig, model)
        data = FeatureData(str(build), cfg.max_seq_len, device)
        net, history = train_genctr(data, cfg, tcfg, _ckpt_beside(out), fp=fingerprint(method, cfg, tcfg, str(build)))
        config = {"kind": KIND_GENCTR, "model": dataclasses.asdict(net.cfg)}
    elif method == "dgenctr":
        from genctr.training.run_dgenctr import train_dgenctr

        dcfg = from_dict(DGenCTRConfig, {k: v for k, v in model.items() if k != "max_seq_len"})
        data = FeatureData(str(build), int(model.get("max_seq_len", 200)), device)
        net, history = train_dgenctr(data, dcfg, tcfg, _ckpt_beside(out),
                                     fp=fingerprint(method, dcfg, tcfg, str(build)))
        config = {"kind": KIND_DGENCTR, "model": dataclasses.asdict(dcfg), "vocab": data.vocab_sizes,
                  "max_seq_len": data.max_seq_len}
    config["train"] = dataclasses.asdict(tcfg)
    diagnostics = summarize(history, HELDOUT_LOSS, restored=tcfg.patience > 0)
    _finish(out, net, config, build, {"history": history, "diagnostics": diagnostics}, world)
    return {"history": history, "diagnostics": diagnostics}


def finetune(build: str | Path, out: str | Path, model: dict[str, Any],
             train: dict[str, Any] | TrainConfig, pretrained: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune a CTR model on a build and write the artifact (with test metrics) to ``out``.

    Without ``pretrained`` or with a GenCTR one, ``model`` holds ModelConfig fields (backbone,
    transfer ...). With a DGenCTR one, the same network is fine-tuned and ``model`` may
    override DGenCTRConfig fields of the pretrained config (e.g. ``{"transfer": "full"}``).
    """
    tcfg = train if isinstance(train, TrainConfig) else from_dict(TrainConfig, train)
    with distributed.session(tcfg.resolve_device()) as (world, device):
        distributed.check_batch(tcfg.batch_size, world)  # before any data is read
        return _finetune(build, out, model, tcfg, pretrained, world, device)


def _finetune(build: str | Path, out: str | Path, model: dict[str, Any], tcfg: TrainConfig,
              pretrained: str | Path | None, world: distributed.World, device: str) -> dict[str, Any]:
    meta = read_config(pretrained) if pretrained else None
    net: nn.Module
    config: dict[str, Any]
    if pretrained and meta is not None and meta["kind"] == KIND_DGENCTR:  # meta is None exactly when not pretrained
        from genctr.training.run_dgenctr import init_dgenctr_ctr

        dcfg = from_dict(DGenCTRConfig, {**meta["model"], **{k: v for k, v in model.items() if k != "max_seq_len"}})
        data = FeatureData(str(build), max_seq_len_of(pretrained), device)
        pre_dgenctr = cast("DGenCTR", load_model(pretrained, data.device))  # a KIND_DGENCTR artifact builds one
        net = init_dgenctr_ctr(data, dcfg, pre_dgenctr, tcfg.seed)
        config = {"kind": KIND_DGENCTR_CTR, "model": dataclasses.asdict(dcfg), "vocab": data.vocab_sizes,
                  "max_seq_len": data.max_seq_len}
    else:
        cfg = from_dict(ModelConfig, model)
        data = FeatureData(str(build), cfg.max_seq_len, device)
        pre: GenCTR | None = None
        if cfg.transfer != "none":
            if meta is None or not pretrained:  # the same test: meta is None exactly when not pretrained
                raise ConfigError(f"transfer={cfg.transfer} needs a pretrained GenCTR model directory")
            if meta["kind"] != KIND_GENCTR:
                raise ArtifactError(f"{pretrained} is a {meta['kind']!r} model, not a GenCTR pretrained model")
            pre = cast(GenCTR, load_model(pretrained, data.device))  # a KIND_GENCTR artifact builds a GenCTR
        net = init_ctr(data, cfg, pre, tcfg.seed)
        config = {"kind": KIND_CTR, "model": dataclasses.asdict(with_vocab(cfg, data))}
    history = train_ctr(data, net, tcfg, _ckpt_beside(out),
                        fp=fingerprint(config["model"], tcfg, str(build), str(pretrained)))
    test = distributed.broadcast_json(evaluate_split(net, data, "test") if world.is_main else None, world)
    if world.is_main:
        log.info("test: %s", test)
    config["train"] = dataclasses.asdict(tcfg)
    diagnostics = summarize(history, finetune_monitor(tcfg), restored=tcfg.patience > 0)
    _finish(out, net, config, build, {"history": history, "test": test, "diagnostics": diagnostics}, world)
    return {"history": history, "test": test, "diagnostics": diagnostics}
