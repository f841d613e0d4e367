"""Forward process of DGenCTR: absorbing ("masking") discrete diffusion over field tokens.

At step t in 1..T every field is independently replaced by its own [MASK] with
probability λ(t). Pure functions of tensors and the config; the model calls ``draw_noise``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from genctr.models.dgenctr_config import LABEL, N_FIELDS, DGenCTRConfig

# Fine-tuning masks only the label: the lowest noise level the denoiser saw in pretraining
# (and the only one when diffusion=False), so its timestep embedding is a trained one.
FINETUNE_T = 1


def mask_ratio(t: Tensor, cfg: DGenCTRConfig) -> Tensor:
    """λ(t) for integer steps t (any shape): linear t/T or cosine 1 - cos(π t / 2T).

    With ``diffusion=False`` it is ``fixed_mask_ratio`` for every t.
    """
    if not cfg.diffusion:
        return torch.full(t.shape, cfg.fixed_mask_ratio, dtype=torch.float32, device=t.device)
    frac = t.float() / cfg.timesteps
    if cfg.schedule == "linear":
        return frac
    return 1.0 - torch.cos(0.5 * math.pi * frac)


def loss_weight(t: Tensor, cfg: DGenCTRConfig) -> Tensor:
    """Per-sample weight of a masked field's cross-entropy, so that E_t,mask[mask · w] = 1.

    mdlm: T (λ(t) - λ(t-1)) / λ(t), the discrete-time ELBO weight of absorbing diffusion;
    it equals 1/λ(t) for the linear schedule and stays <= T for cosine, where the plain
    1/λ(t) ("inverse") reaches 1/λ(1) ≈ 8000 at T = 100. none: 1. Without diffusion both
    mdlm and inverse give 1 / fixed_mask_ratio.
    """
    if cfg.loss_weighting == "none":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    lam = mask_ratio(t, cfg)
    if cfg.loss_weighting == "inverse" or not cfg.diffusion:
        return 1.0 / lam
    return cfg.timesteps * (lam - mask_ratio(t - 1, cfg)) / lam


def draw_noise(
    batch_size: int,
    cfg: DGenCTRConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw steps t [B] (long, 1..T) and the mask [B, N_FIELDS] (bool, True = masked).

    Fields are in canonical ``FIELDS`` order. With ``diffusion=False`` every t is 1 (one
    noise level). With ``label_in_pretraining=False`` the label column is always masked:
    the denoiser never sees a label and the label is never a target.
    ``generator`` must live on ``device``.
    """
    if cfg.diffusion:
        t = torch.randint(1, cfg.timesteps + 1, (batch_size,), generator=generator, device=device)
    else:
        t = torch.full((batch_size,), FINETUNE_T, dtype=torch.long, device=device)
    u = torch.rand(batch_size, N_FIELDS, generator=generator, device=device)
    masked = u < mask_ratio(t, cfg)[:, None]  # (B, F)
    if not cfg.label_in_pretraining:
        masked[:, LABEL] = True
    return t, masked


__all__ = ["FINETUNE_T", "mask_ratio", "loss_weight", "draw_noise"]
