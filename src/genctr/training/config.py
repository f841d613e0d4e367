"""Training settings shared by pretraining and fine-tuning."""
from __future__ import annotations

from dataclasses import dataclass

from genctr.errors import ConfigError


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 10.0  # max gradient norm; 0 disables clipping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the model
    eval_batch_size: int = 8192
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError("train.epochs must be >= 1")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("train.batch_size and eval_batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError("train.lr must be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")

    def resolve_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available")
        return self.device
