"""Training settings shared by pretraining and fine-tuning."""
from __future__ import annotations

from dataclasses import dataclass

from genctr.config import check_range, coerce_fields
from genctr.errors import ConfigError, describe

DEVICES = ("auto", "cpu", "cuda")


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

    def __post_init__(self) -> None:
        coerce_fields(self, "train")  # types first: bools are not ints, floats are finite
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_range(f"train.{name}", getattr(self, name), lo=1)
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
