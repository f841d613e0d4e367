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
from genctr.models.transfer import build_ctr_model
from genctr.training.checkpoint import clear_checkpoints
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.loop import fit, predict_logits

if TYPE_CHECKING:
    from genctr.models.dgenctr import DGenCTR

log = logging.getLogger(__name__)

METHODS = ("none", "genctr", "dgenctr")


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
                      train, path, on_epoch_end=on_epoch_end, desc="pretrain", fingerprint=fp)
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


def train_ctr(data: FeatureData, model: nn.Module, train: TrainConfig,
              ckpt_dir: str | Path | None = None, on_epoch_end=None, fp: str = "") -> list[dict]:
    """Fine-tune ``model`` in place with BCE on the train split; validation metrics per epoch."""
    s = data.splits["train"]

    def valid_metrics(m: nn.Module) -> dict[str, float]:
        return {f"valid_{k}": v for k, v in evaluate_split(m, data, "valid").items()}

    path, tmp = _ckpt(ckpt_dir)
    try:
        history = fit(model, ctr_objective, len(s), lambda idx: data.batch(s, idx), train, path,
                      evaluate=valid_metrics, on_epoch_end=on_epoch_end, desc="finetune",
                      fingerprint=fp)
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
            metrics: dict[str, Any]) -> None:
    save_artifact(out, net, config, build, metrics)
    clear_checkpoints(_ckpt_beside(out))  # set-aside corrupt checkpoints stay, with a warning


def pretrain(build: str | Path, out: str | Path, method: str, model: dict[str, Any],
             train: dict[str, Any] | TrainConfig) -> dict[str, Any]:
    """Pretrain with ``method`` (genctr | dgenctr) and write the artifact to ``out``.

    ``model`` holds ModelConfig fields for genctr and DGenCTRConfig fields for dgenctr.
    """
    tcfg = train if isinstance(train, TrainConfig) else from_dict(TrainConfig, {"epochs": 3, **train})
    net: GenCTR | DGenCTR
    config: dict[str, Any]
    if method == "genctr":
        cfg = from_dict(ModelConfig, model)
        data = FeatureData(str(build), cfg.max_seq_len, tcfg.resolve_device())
        net, history = train_genctr(data, cfg, tcfg, _ckpt_beside(out), fp=fingerprint(method, cfg, tcfg, str(build)))
        config = {"kind": KIND_GENCTR, "model": dataclasses.asdict(net.cfg)}
    elif method == "dgenctr":
        from genctr.training.run_dgenctr import train_dgenctr

        dcfg = from_dict(DGenCTRConfig, {k: v for k, v in model.items() if k != "max_seq_len"})
        data = FeatureData(str(build), int(model.get("max_seq_len", 200)), tcfg.resolve_device())
        net, history = train_dgenctr(data, dcfg, tcfg, _ckpt_beside(out),
                                     fp=fingerprint(method, dcfg, tcfg, str(build)))
        config = {"kind": KIND_DGENCTR, "model": dataclasses.asdict(dcfg), "vocab": data.vocab_sizes,
                  "max_seq_len": data.max_seq_len}
    else:
        raise ConfigError(f"pretrain method must be 'genctr' or 'dgenctr', got {method!r}")
    config["train"] = dataclasses.asdict(tcfg)
    _finish(out, net, config, build, {"history": history})
    return {"history": history}


def finetune(build: str | Path, out: str | Path, model: dict[str, Any],
             train: dict[str, Any] | TrainConfig, pretrained: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune a CTR model on a build and write the artifact (with test metrics) to ``out``.

    Without ``pretrained`` or with a GenCTR one, ``model`` holds ModelConfig fields (backbone,
    transfer ...). With a DGenCTR one, the same network is fine-tuned and ``model`` may
    override DGenCTRConfig fields of the pretrained config (e.g. ``{"transfer": "full"}``).
    """
    tcfg = train if isinstance(train, TrainConfig) else from_dict(TrainConfig, train)
    meta = read_config(pretrained) if pretrained else None
    net: nn.Module
    config: dict[str, Any]
    if pretrained and meta is not None and meta["kind"] == KIND_DGENCTR:  # meta is None exactly when not pretrained
        from genctr.training.run_dgenctr import init_dgenctr_ctr

        dcfg = from_dict(DGenCTRConfig, {**meta["model"], **{k: v for k, v in model.items() if k != "max_seq_len"}})
        data = FeatureData(str(build), max_seq_len_of(pretrained), tcfg.resolve_device())
        pre_dgenctr = cast("DGenCTR", load_model(pretrained, data.device))  # a KIND_DGENCTR artifact builds one
        net = init_dgenctr_ctr(data, dcfg, pre_dgenctr, tcfg.seed)
        config = {"kind": KIND_DGENCTR_CTR, "model": dataclasses.asdict(dcfg), "vocab": data.vocab_sizes,
                  "max_seq_len": data.max_seq_len}
    else:
        cfg = from_dict(ModelConfig, model)
        data = FeatureData(str(build), cfg.max_seq_len, tcfg.resolve_device())
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
    test = evaluate_split(net, data, "test")
    log.info("test: %s", test)
    config["train"] = dataclasses.asdict(tcfg)
    _finish(out, net, config, build, {"history": history, "test": test})
    return {"history": history, "test": test}
