"""One training loop for pretraining and fine-tuning.

Rows are shuffled by a device-side permutation and gathered into batches by index (see
``data.py``). Every epoch reseeds its random streams from (seed, epoch), and a checkpoint
is written at the end of each epoch, so a run killed at any point and resumed from its
last checkpoint ends with exactly the weights of an uninterrupted run.

The budget is ``epochs`` passes or, with ``max_steps``, exactly that many optimizer steps.
With ``patience`` the run stops early once the monitored held-out value has not improved
for that many epochs, and ends with the best epoch's weights (read back from its
checkpoint). Embedding tables transferred from pretraining form their own parameter group,
with the learning rate ``lr * transfer_lr_mult`` and none in the first
``transfer_freeze_steps`` steps.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genctr.errors import ArtifactError, ConfigError
from genctr.training.checkpoint import checkpoint_path, load_model_weights, resume, save_checkpoint
from genctr.training.config import TrainConfig
from genctr.training.early_stopping import Monitor, best_epoch, should_stop

log = logging.getLogger(__name__)

Objective = Callable[[nn.Module, dict[str, Tensor], torch.Generator], Tensor]
MakeBatch = Callable[[Tensor], dict[str, Tensor]]


def param_groups(model: nn.Module, cfg: TrainConfig, transferred: Collection[str] = ()) -> list[dict[str, Any]]:
    """Group 0: every parameter not named in ``transferred``, at ``lr``; group 1 (only when
    ``transferred`` names any): the transferred tables, at :func:`transfer_lr` of step 0."""
    named = dict(model.named_parameters())
    unknown = sorted(set(transferred) - set(named))
    if unknown:
        raise ConfigError(f"transferred parameters {unknown[:3]} are not parameters of the model being trained")
    chosen = set(transferred)
    groups: list[dict[str, Any]] = [{"params": [p for n, p in named.items() if n not in chosen], "lr": cfg.lr}]
    if chosen:
        groups.append({"params": [p for n, p in named.items() if n in chosen], "lr": transfer_lr(cfg, 0)})
    return groups


def transfer_lr(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the transferred tables at optimizer step ``step`` (0-based)."""
    return 0.0 if step < cfg.transfer_freeze_steps else cfg.lr * cfg.transfer_lr_mult


def make_optimizer(model: nn.Module, cfg: TrainConfig, transferred: Collection[str] = ()) -> torch.optim.Optimizer:
    # Fused Adam: one pass over each parameter per step, on CUDA and on CPU alike (on CPU about
    # 2x faster than foreach, which runs ~8 element-wise passes; the dense embedding tables make
    # the optimizer a visible share of a CPU step). Older builds without it fall back to foreach.
    # A group at lr 0 leaves its parameters bit-for-bit unchanged (Adam's update is lr * m / v).
    groups = param_groups(model, cfg, transferred)
    try:
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(param_groups(model, cfg, transferred), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                foreach=True)


def step_budget(n_rows: int, cfg: TrainConfig) -> tuple[int, int]:
    """(total optimizer steps, passes over the rows) the run may take."""
    per_epoch = -(-n_rows // cfg.batch_size)
    if not cfg.max_steps:
        return cfg.epochs * per_epoch, cfg.epochs
    return cfg.max_steps, -(-cfg.max_steps // per_epoch) if per_epoch else 0


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """``clip_grad_norm_`` with one pass fewer on CPU.

    On CPU reading the norm costs no device sync, so gradients are rescaled only when the norm
    exceeds ``max_norm`` (multiplying by the clamped coefficient 1.0 changes nothing). On CUDA
    the sync-free ``clip_grad_norm_`` runs unchanged.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    if params[0].is_cuda:
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    grads = [g for p in params if (g := p.grad) is not None]  # all of params (filtered above)
    norm = nn.utils.get_total_norm(grads, foreach=True)
    if not float(max_norm / (norm + 1e-6)) >= 1.0:  # clip_grad_norm_'s coefficient (NaN clips too)
        nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)


def autocast(device: torch.device, cfg: TrainConfig) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and cfg.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def fit(
    model: nn.Module,
    objective: Objective,
    n_rows: int,
    make_batch: MakeBatch,
    cfg: TrainConfig,
    ckpt_dir: str | Path,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    desc: str = "train",
    fingerprint: str = "",
    *,
    monitor: Monitor | None = None,
    transferred: Collection[str] = (),
    evaluate_at_start: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` in place within ``cfg``'s budget; resumes from ``ckpt_dir`` if it holds a checkpoint.

    Returns the per-epoch history (epoch, cumulative optimizer steps, train loss, throughput, and
    ``evaluate``'s metrics); with ``evaluate_at_start`` a fresh run first records the untrained
    model as epoch 0. ``monitor`` names the ``evaluate`` key early stopping (``cfg.patience``)
    watches; ``transferred`` the parameters of the transfer group. ``fingerprint`` identifies the
    run's settings: checkpoints of a different run are discarded rather than resumed; one that
    fails to load is renamed ``*.corrupt`` and the epoch before it is resumed instead (see
    :func:`genctr.training.checkpoint.resume`).
    """
    if cfg.patience and (monitor is None or evaluate is None):
        raise ConfigError(f"train.patience = {cfg.patience} needs a held-out metric, and this {desc} run has "
                          "none (an empty valid split?); set train.patience to 0")
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg, transferred)
    history: list[dict[str, Any]] = []
    first = 0
    meta = resume(ckpt_dir, model, opt, fingerprint)  # a checkpoint that fails to load is set aside
    if meta is not None:
        history, first = meta["history"], meta["epoch"] + 1
    elif evaluate is not None and evaluate_at_start:
        history.append({"epoch": 0, "steps": 0, **evaluate(model)})
    total, n_epochs = step_budget(n_rows, cfg)
    steps = int(history[-1].get("steps", 0)) if history else 0
    # Compile the whole objective, not only ``model.forward``: pretraining objectives call
    # other methods (``pretrain_logits``), and the loss fuses into the same graph.
    step = torch.compile(objective) if cfg.compile else objective
    for epoch in range(first, n_epochs):
        if steps >= total or (monitor is not None and should_stop(history, monitor, cfg.patience)):
            break
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout and init-free randomness
        gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch))
        perm = torch.randperm(n_rows, generator=gen, device=device)
        model.train()
        t0, total_loss, seen = time.perf_counter(), torch.zeros((), device=device), 0
        starts = range(0, min(n_rows, (total - steps) * cfg.batch_size), cfg.batch_size)  # the budget's steps
        # in logs (no TTY: pipelines, CI) a bar line every 30 s rather than every step
        bar = tqdm(starts, desc=f"{desc} epoch {epoch + 1}/{n_epochs}", disable=not cfg.progress, leave=False,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
        for s in bar:
            idx = perm[s : s + cfg.batch_size]
            batch = make_batch(idx)
            with autocast(device, cfg):
                loss = step(model, batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                clip_gradients(model, cfg.grad_clip)
            if len(opt.param_groups) > 1:
                opt.param_groups[1]["lr"] = transfer_lr(cfg, steps)
            opt.step()
            steps += 1
            total_loss += loss.detach() * len(idx)  # stays on device: no sync per step
            seen += len(idx)
        secs = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "steps": steps, "rows": seen,
                               "train_loss": float(total_loss) / max(seen, 1), "seconds": secs,
                               "rows_per_s": seen / max(secs, 1e-9)}
        if evaluate is not None:
            row.update(evaluate(model))
        history.append(row)
        log.info("%s epoch %d: %s", desc, epoch + 1,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))))
        save_checkpoint(ckpt_dir, epoch, model, opt, history, fingerprint)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    if monitor is not None and cfg.patience:
        restore_best(model, history, monitor, ckpt_dir, desc)
    return history


def restore_best(model: nn.Module, history: list[dict[str, Any]], monitor: Monitor, ckpt_dir: str | Path,
                 desc: str) -> None:
    """Load the weights of the best monitored epoch (its checkpoint) unless they are the last ones."""
    best = best_epoch(history, monitor)
    last = history[-1]["epoch"] if history else 0
    if best is None or best == last:
        return
    try:
        load_model_weights(checkpoint_path(ckpt_dir, best - 1), model)
    except ArtifactError as exc:  # e.g. set aside as corrupt: keep the last weights, loudly
        log.warning("%s: cannot restore the best epoch %d (%s); keeping epoch %d's weights", desc, best, exc, last)
        return
    log.info("%s: stopped after epoch %d; restored epoch %d (best %s)", desc, last, best, monitor.key)


@torch.no_grad()
def predict_logits(model: nn.Module, n_rows: int, make_batch: MakeBatch, batch_size: int,
                   cfg: TrainConfig | None = None) -> Tensor:
    """Logits for rows 0..n_rows-1 in order, shape (n_rows,), on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, n_rows, batch_size):
        idx = torch.arange(s, min(s + batch_size, n_rows), device=device)
        with autocast(device, cfg or TrainConfig()):
            out.append(model(make_batch(idx)).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, device=device)
