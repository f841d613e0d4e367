"""DGenCTR runs: diffusion pretraining over whole training samples, then full transfer.

The fine-tuning network is the pretraining network itself (label always masked), so the
fine-tuned model needs no backbone choice; ``cfg.transfer`` picks what is copied.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from genctr.models.dgenctr import DGenCTR, dgenctr_loss, transfer
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.loop import fit

log = logging.getLogger(__name__)


def dgenctr_objective(model: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    # cast: fit hands back the model it trains, train_dgenctr's DGenCTR (a no-op under torch.compile too)
    out = cast(DGenCTR, model).pretrain_logits(batch, gen)
    return dgenctr_loss(out.logits, out.target_mask, out.weights)


def build_dgenctr(cfg: DGenCTRConfig, data: FeatureData) -> DGenCTR:
    v = data.vocab_sizes
    return DGenCTR(cfg, n_users=v["user"], n_items=v["item"], n_cates=v["category"]).to(data.device)


def train_dgenctr(data: FeatureData, cfg: DGenCTRConfig, train: TrainConfig, ckpt_dir: str | Path,
                  on_epoch_end=None, fp: str = "") -> tuple[DGenCTR, list[dict]]:
    """Masked-diffusion pretraining on the train split's samples (labels included)."""
    torch.manual_seed(train.seed)
    model = build_dgenctr(cfg, data)
    s = data.splits["train"]
    history = fit(model, dgenctr_objective, len(s), lambda idx: data.batch(s, idx), train, ckpt_dir,
                  on_epoch_end=on_epoch_end, desc="pretrain dgenctr", fingerprint=fp)
    return model, history


def init_dgenctr_ctr(data: FeatureData, cfg: DGenCTRConfig, pretrained: DGenCTR | None, seed: int) -> DGenCTR:
    """The fine-tuning network, with ``cfg.transfer`` applied from ``pretrained`` if given."""
    torch.manual_seed(seed)
    model = build_dgenctr(cfg, data)
    if pretrained is not None:
        copied = transfer(pretrained, model, cfg.transfer)
        log.info("dgenctr transfer=%s copied %d tensors", cfg.transfer, len(copied))
    return model
