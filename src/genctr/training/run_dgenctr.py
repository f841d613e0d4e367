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
from genctr.training.data import FeatureData, Split, concat_splits
from genctr.training.diagnostics import denoising_heldout
from genctr.training.early_stopping import Monitor
from genctr.training.labelled import label_known, labelled_rows
from genctr.training.loop import fit

log = logging.getLogger(__name__)

HELDOUT_LOSS = Monitor("heldout_loss", "min")  # what pretraining early-stops on


def dgenctr_objective(model: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    # cast: fit hands back the model it trains, train_dgenctr's DGenCTR (a no-op under torch.compile too)
    out = cast(DGenCTR, model).pretrain_logits(batch, gen)
    return dgenctr_loss(out.logits, out.targets, out.target_mask, out.weights)


def build_dgenctr(cfg: DGenCTRConfig, data: FeatureData) -> DGenCTR:
    v = data.vocab_sizes
    return DGenCTR(cfg, n_users=v["user"], n_items=v["item"], n_cates=v["category"]).to(data.device)


def train_dgenctr(data: FeatureData, cfg: DGenCTRConfig, train: TrainConfig, ckpt_dir: str | Path,
                  on_epoch_end=None, fp: str = "") -> tuple[DGenCTR, list[dict]]:
    """Masked-diffusion pretraining on the training period's samples (labels of the labelled share only).

    The samples are ``pretraining_corpus``'s (``cfg.pretrain_samples``); with ``train.label_fraction``
    < 1 the label of an impression outside the labelled share is masked and never a target. The
    history holds the held-out (valid split) denoising loss and per-field cross-entropies from the
    untrained model (epoch 0) on; with ``train.patience`` the held-out loss decides when to stop.
    """
    torch.manual_seed(train.seed)
    model = build_dgenctr(cfg, data)
    valid = data.splits["valid"]
    s, known = pretraining_corpus(data, cfg, train)  # known: (N,) bool or None

    def make_batch(idx: Tensor) -> dict[str, Tensor]:
        batch = data.batch(s, idx)
        return batch if known is None else {**batch, "label_known": known[idx]}

    def evaluate(m: nn.Module) -> dict[str, float]:
        # batches of the training size: in-batch fields then have as many candidates as in training
        return denoising_heldout(cast(DGenCTR, m), data, valid, train.seed, train.batch_size)

    has_valid = len(valid) > 0
    history = fit(model, dgenctr_objective, len(s), make_batch, train, ckpt_dir,
                  evaluate=evaluate if has_valid else None, on_epoch_end=on_epoch_end, desc="pretrain dgenctr",
                  fingerprint=fp, monitor=HELDOUT_LOSS if has_valid else None, evaluate_at_start=True)
    return model, history


def pretraining_corpus(data: FeatureData, cfg: DGenCTRConfig, train: TrainConfig) -> tuple[Split, Tensor | None]:
    """The samples DGenCTR pretrains on (``cfg.pretrain_samples``) and which show their label: (N,) bool,
    None when every one does. Only impressions of the labelled share (``genctr.training.labelled``, the rows
    fine-tuning uses) ever show a label; a behaviour sample never does."""
    s = data.splits["train"]
    if cfg.pretrain_samples == "impressions":
        return s, label_known(s, train.label_fraction, train.label_sampling, train.seed)
    if cfg.pretrain_samples == "behaviours":
        impressions = s.take(labelled_rows(s, train.label_fraction, train.label_sampling, train.seed))
        shown = torch.ones(len(impressions), dtype=torch.bool, device=data.device)
    else:  # both
        impressions = s
        known = label_known(s, train.label_fraction, train.label_sampling, train.seed)
        shown = torch.ones(len(s), dtype=torch.bool, device=data.device) if known is None else known
    behaviours = data.behaviour_samples()
    hidden = torch.zeros(len(behaviours), dtype=torch.bool, device=data.device)
    return concat_splits([impressions, behaviours]), torch.cat([shown, hidden])


def init_dgenctr_ctr(data: FeatureData, cfg: DGenCTRConfig, pretrained: DGenCTR | None, seed: int) -> DGenCTR:
    """The fine-tuning network, with ``cfg.transfer`` applied from ``pretrained`` if given."""
    torch.manual_seed(seed)
    model = build_dgenctr(cfg, data)
    if pretrained is not None:
        copied = transfer(pretrained, model, cfg.transfer)
        log.info("dgenctr transfer=%s copied %d tensors", cfg.transfer, len(copied))
    return model
