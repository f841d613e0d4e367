"""Pretraining and fine-tuning runs: a feature build in, a model artifact out.

Two levels: ``train_*`` functions work on an already loaded :class:`FeatureData` (the
ablation benchmark reuses one load across many arms); ``pretrain``/``finetune`` read a
build directory and write an artifact directory (what the CLI and the pipeline call).
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genctr.config import from_dict
from genctr.errors import ArtifactError, ConfigError
from genctr.evaluation.metrics import evaluate
from genctr.models.config import ModelConfig
from genctr.models.genctr import GenCTR
from genctr.models.losses import sampled_softmax_loss
from genctr.models.transfer import build_ctr_model
from genctr.training.artifacts import load_weights, read_config, save_artifact
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.loop import fit, predict_logits

log = logging.getLogger(__name__)

KIND_GENCTR = "genctr_pretrain"
KIND_CTR = "ctr"


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
    m = model._orig_mod if hasattr(model, "_orig_mod") else model  # compiled wrapper
    logits, valid = m.pretrain_logits(batch, gen)
    return sampled_softmax_loss(logits, valid)


def ctr_objective(model: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(batch).float(), batch["label"])


def train_genctr(data: FeatureData, cfg: ModelConfig, train: TrainConfig,
                 ckpt_dir: str | Path | None = None, on_epoch_end=None) -> tuple[GenCTR, list[dict]]:
    """Next-item pretraining on the training period's behaviour windows."""
    cfg = with_vocab(cfg, data)
    torch.manual_seed(train.seed)
    model = GenCTR(cfg, item_cate=data.item_categories()).to(data.device)
    ends, lengths = data.pretrain_windows()
    if len(ends) == 0:
        raise ConfigError("pretraining: the training period holds no behaviour sequence of length >= 2")
    path, tmp = _ckpt(ckpt_dir)
    try:
        history = fit(model, genctr_objective, len(ends),
                      lambda idx: data.sequence_batch(ends[idx], lengths[idx]),
                      train, path, on_epoch_end=on_epoch_end, desc="pretrain")
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


def train_ctr(data: FeatureData, cfg: ModelConfig, train: TrainConfig, pretrained: GenCTR | None = None,
              ckpt_dir: str | Path | None = None, on_epoch_end=None) -> tuple[nn.Module, list[dict]]:
    """Fine-tune a backbone (with the configured transfer) on the train split."""
    cfg = with_vocab(cfg, data)
    torch.manual_seed(train.seed)
    model = build_ctr_model(cfg, pretrained).to(data.device)
    s = data.splits["train"]

    def valid_metrics(m: nn.Module) -> dict[str, float]:
        return {f"valid_{k}": v for k, v in evaluate_split(m, data, "valid").items()}

    path, tmp = _ckpt(ckpt_dir)
    try:
        history = fit(model, ctr_objective, len(s), lambda idx: data.batch(s, idx), train, path,
                      evaluate=valid_metrics, on_epoch_end=on_epoch_end, desc=f"finetune {cfg.backbone}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return model, history


def model_config_of(model: nn.Module) -> ModelConfig:
    inner = model.backbone if hasattr(model, "backbone") else model
    return getattr(model, "cfg", None) or inner.cfg


# -- path level -------------------------------------------------------------------------

def _load_data(build: str | Path, cfg: ModelConfig, train: TrainConfig) -> FeatureData:
    return FeatureData(str(build), cfg.max_seq_len, train.resolve_device())


def pretrain(build: str | Path, out: str | Path, model: dict[str, Any] | ModelConfig,
             train: dict[str, Any] | TrainConfig) -> dict[str, Any]:
    cfg = model if isinstance(model, ModelConfig) else from_dict(ModelConfig, model)
    tcfg = train if isinstance(train, TrainConfig) else from_dict(TrainConfig, {"epochs": 3, **train})
    data = _load_data(build, cfg, tcfg)
    net, history = train_genctr(data, cfg, tcfg, Path(out).with_name(Path(out).name + ".ckpt"))
    config = {"kind": KIND_GENCTR, "model": dataclasses.asdict(net.cfg), "train": dataclasses.asdict(tcfg)}
    save_artifact(out, net, config, build, {"history": history})
    return {"history": history}


def finetune(build: str | Path, out: str | Path, model: dict[str, Any] | ModelConfig,
             train: dict[str, Any] | TrainConfig, pretrained: str | Path | None = None) -> dict[str, Any]:
    cfg = model if isinstance(model, ModelConfig) else from_dict(ModelConfig, model)
    tcfg = train if isinstance(train, TrainConfig) else from_dict(TrainConfig, train)
    data = _load_data(build, cfg, tcfg)
    pre = None
    if cfg.transfer != "none":
        if not pretrained:
            raise ConfigError(f"transfer={cfg.transfer} needs a pretrained model directory")
        pre = load_model(pretrained, data.device)
        if not isinstance(pre, GenCTR):
            raise ArtifactError(f"{pretrained} is not a GenCTR pretrained model")
    net, history = train_ctr(data, cfg, tcfg, pre, Path(out).with_name(Path(out).name + ".ckpt"))
    test = evaluate_split(net, data, "test")
    log.info("test: %s", test)
    config = {"kind": KIND_CTR, "model": dataclasses.asdict(with_vocab(cfg, data)), "train": dataclasses.asdict(tcfg)}
    save_artifact(out, net, config, build, {"history": history, "test": test})
    return {"history": history, "test": test}


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from its artifact (config.json + safetensors), in eval mode."""
    meta = read_config(model_dir)
    cfg = from_dict(ModelConfig, meta["model"])
    if meta["kind"] == KIND_GENCTR:
        net: nn.Module = GenCTR(cfg)
    elif meta["kind"] == KIND_CTR:
        net = build_ctr_model(cfg, None, for_loading=True)
    else:
        raise ArtifactError(f"{model_dir}: unknown model kind {meta['kind']!r}")
    net.load_state_dict(load_weights(model_dir))
    return net.to(device).eval()
