"""Training settings shared by pretraining and fine-tuning."""
from __future__ import annotations

from dataclasses import dataclass

from genctr.config import check_range, coerce_fields
from genctr.errors import ConfigError, describe

DEVICES = ("auto", "cpu", "cuda")
EARLY_STOP_METRICS = ("logloss", "auc")  # fine-tuning's monitored valid metric (lower | higher is better)
LABEL_SAMPLINGS = ("impression", "user")  # the unit ``label_fraction`` draws
# Pretraining batch per method when a pipeline leaves it at 0. GenCTR's rows are windows of up to L
# behaviours (64 x L predictions a step); DGenCTR's are single samples scored against each other in
# the batch, so it needs many more rows a step to see enough negatives (and pays O(B^2) per field).
PRETRAIN_BATCH = {"genctr": 64, "dgenctr": 512}


def pretrain_batch_size(method: str, requested: int) -> int:
    """``requested`` if > 0, else the method's default batch (``PRETRAIN_BATCH``)."""
    if requested < 0:
        raise ConfigError(f"pretraining batch_size must be >= 0 (0 = the method's default), got {requested}")
    if requested:
        return requested
    if method not in PRETRAIN_BATCH:
        raise ConfigError(f"no default pretraining batch for method {describe(method)}: "
                          f"one of {sorted(PRETRAIN_BATCH)}")
    return PRETRAIN_BATCH[method]


@dataclass
class TrainConfig:
    """Optimiser and loop settings; every field is type- and range-checked on construction."""

    epochs: int = 1  # >= 1 passes over the training split
    batch_size: int = 1024  # >= 1 samples per optimiser step
    lr: float = 1e-3  # > 0, finite (an infinite rate would only show as NaN loss after the run)
    weight_decay: float = 0.0  # >= 0 (AdamW's decoupled decay; negative would grow the weights)
    grad_clip: float = 10.0  # max gradient norm, > 0; exactly 0 disables clipping
    seed: int = 0  # 0..2**32-1 (epoch seeds are seed * 1_000_003 + epoch and must fit torch's 64 bits)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the model
    eval_batch_size: int = 8192  # >= 1 samples per scoring batch
    progress: bool = True
    # -- budget and early stopping (every arm of a comparison gets the same budget and rule)
    # >= 0 optimizer steps: 0 = `epochs` full passes; > 0 = exactly this many steps, in as many passes
    # as that takes (the last one cut short), and `epochs` is not used
    max_steps: int = 0
    # >= 0: stop once this many epochs in a row brought no better held-out value, then restore the
    # best epoch's weights (fine-tuning monitors valid `early_stop_metric`; GenCTR pretraining the
    # held-out next-item loss, DGenCTR pretraining the held-out denoising loss); 0 = no early
    # stopping: the whole budget is trained and the last weights kept
    patience: int = 0
    early_stop_metric: str = "logloss"  # logloss (lower is better) | auc (higher is better)
    # -- transferred embedding tables (share / integrate / DGenCTR transfer; no effect without one;
    #    with DGenCTR's transfer_group="all", every tensor its transfer copied)
    transfer_lr_mult: float = 1.0  # >= 0: their learning rate is lr * this (0 = frozen for the whole run)
    transfer_freeze_steps: int = 0  # >= 0: they get no update in the first N optimizer steps
    # >= 0: model integration's pretrained decoder (all of it, its own copies of the item and category
    # tables too; transfer_lr_mult then acts on the backbone's tables) trains at lr * this; 0 = frozen.
    # With few labels a decoder trained end to end overfits within an epoch or two (RESULTS.md)
    decoder_lr_mult: float = 1.0
    # -- labelled data: fine-tuning (and DGenCTR pretraining's label field) uses the labels of this
    # share of the training impressions, in (0, 1]; pretraining still sees all training-period
    # behaviour and every history stays complete (what the behaviour log holds, not what is labelled)
    label_fraction: float = 1.0
    label_sampling: str = "impression"  # impression | user: what the fraction draws, seeded by `seed`

    def __post_init__(self) -> None:
        coerce_fields(self, "train")  # types first: bools are not ints, floats are finite
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_range(f"train.{name}", getattr(self, name), lo=1)
        for name in ("max_steps", "patience", "transfer_freeze_steps"):
            check_range(f"train.{name}", getattr(self, name), lo=0)
        check_range("train.transfer_lr_mult", self.transfer_lr_mult, lo=0.0)
        check_range("train.decoder_lr_mult", self.decoder_lr_mult, lo=0.0)
        check_range("train.label_fraction", self.label_fraction, lo=0.0, hi=1.0, lo_open=True)
        for name, choices in (("early_stop_metric", EARLY_STOP_METRICS), ("label_sampling", LABEL_SAMPLINGS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"train.{name} must be one of {choices}, got {describe(getattr(self, name))}")
        check_range("train.lr", self.lr, lo=0.0, lo_open=True)
        check_range("train.weight_decay", self.weight_decay, lo=0.0)
        check_range("train.grad_clip", self.grad_clip, lo=0.0)  # 0 = off, documented above
        check_range("train.seed", self.seed, lo=0, hi=2**32 - 1)
        if self.device not in DEVICES:
            raise ConfigError(f"train.device must be one of {DEVICES}, got {describe(self.device)}")

    def resolve_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available")
        return self.device
