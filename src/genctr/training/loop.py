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
``transfer_freeze_steps`` steps; model integration's decoder (its own copies of the tables
included) forms another, at ``lr * decoder_lr_mult``.

Under ``torchrun`` (an initialised process group, see ``distributed.py``) the same loop runs on
every rank: each takes its share of every global batch of the shared permutation, the objective
runs inside DistributedDataParallel, rank 0 alone evaluates (broadcasting the values) and writes
checkpoints, and every rank resumes from the checkpoint rank 0 chose. The step count, the history
and every stopping decision are then identical on all ranks, and the weights equal those of one
process at the same global batch up to float rounding, wherever the objective is a mean over
the batch's rows with no randomness per row (the CTR objectives without dropout). Random draws
inside a step (dropout, GenCTR's sampled negatives, DGenCTR's noise) come from a stream per rank;
rank 0's is the single-process stream.
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
from genctr.training import distributed
from genctr.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_model_weights,
    resume,
    save_checkpoint,
)
from genctr.training.config import TrainConfig
from genctr.training.distributed import World
from genctr.training.early_stopping import Monitor, best_epoch, should_stop

log = logging.getLogger(__name__)

Objective = Callable[[nn.Module, dict[str, Tensor], torch.Generator], Tensor]
MakeBatch = Callable[[Tensor], dict[str, Tensor]]


def param_groups(model: nn.Module, cfg: TrainConfig, transferred: Collection[str] = (),
                 decoder: Collection[str] = ()) -> list[dict[str, Any]]:
    """Group 0: every other parameter, at ``lr``; group 1 (when ``transferred`` names any outside
    ``decoder``): the transferred tables, at :func:`transfer_lr` of step 0; then (when ``decoder``
    names any) the pretrained decoder, its own tables included, at ``lr * decoder_lr_mult``."""
    named = dict(model.named_parameters())
    unknown = sorted((set(transferred) | set(decoder)) - set(named))
    if unknown:
        raise ConfigError(f"transferred parameters {unknown[:3]} are not parameters of the model being trained")
    layers = set(decoder)
    tables = set(transferred) - layers
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in named.items() if n not in tables | layers], "lr": cfg.lr}]
    if tables:
        groups.append({"params": [p for n, p in named.items() if n in tables], "lr": transfer_lr(cfg, 0),
                       "role": "transferred"})
    if layers:
        groups.append({"params": [p for n, p in named.items() if n in layers], "lr": cfg.lr * cfg.decoder_lr_mult,
                       "role": "decoder"})
    return groups


def transfer_lr(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the transferred tables at optimizer step ``step`` (0-based)."""
    return 0.0 if step < cfg.transfer_freeze_steps else cfg.lr * cfg.transfer_lr_mult


def make_optimizer(model: nn.Module, cfg: TrainConfig, transferred: Collection[str] = (),
                   decoder: Collection[str] = ()) -> torch.optim.Optimizer:
    # Fused Adam: one pass over each parameter per step, on CUDA and on CPU alike (on CPU about
    # 2x faster than foreach, which runs ~8 element-wise passes; the dense embedding tables make
    # the optimizer a visible share of a CPU step). Older builds without it fall back to foreach.
    # A group at lr 0 leaves its parameters bit-for-bit unchanged (Adam's update is lr * m / v).
    # Weight decay is decoupled (AdamW: p -= lr * wd * p beside the Adam step). Adam's own
    # weight_decay adds wd * p to the gradient, which the second moment then normalises away:
    # every weight shrinks by about lr per step whatever its size, and rows of a table the batch
    # never touched move as if they had a gradient. With wd = 0 the two are the same update.
    adam = torch.optim.AdamW if cfg.weight_decay > 0 else torch.optim.Adam
    groups = param_groups(model, cfg, transferred, decoder)
    try:
        return adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return adam(param_groups(model, cfg, transferred, decoder), lr=cfg.lr,
                    weight_decay=cfg.weight_decay, foreach=True)


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


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of rank ``rank``'s in-step random streams in ``epoch``: rank 0's is :func:`epoch_seed`
    (a one-process run is rank 0), the others' are drawn from (seed, epoch, rank), so no two ranks
    share a dropout mask or a negative sample."""
    if rank == 0:
        return epoch_seed(seed, epoch)
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _resume(ckpt_dir: str | Path, model: nn.Module, opt: torch.optim.Optimizer, fingerprint: str,
            world: World) -> dict[str, Any] | None:
    """:func:`resume` on rank 0 (which alone sets aside or clears checkpoints); the other ranks then
    load the very checkpoint it chose, so every rank starts from the same epoch and state."""
    if not world.active:
        return resume(ckpt_dir, model, opt, fingerprint)
    meta = resume(ckpt_dir, model, opt, fingerprint) if world.is_main else None
    epoch = distributed.broadcast_json(None if meta is None else meta["epoch"], world)
    if world.is_main or epoch is None:
        return meta
    path = checkpoint_path(ckpt_dir, epoch)
    try:
        return load_checkpoint(path, model, opt)
    except ArtifactError as exc:
        raise ArtifactError(f"rank {world.rank} cannot read the checkpoint rank 0 resumes from ({exc}); every "
                            f"node must see {ckpt_dir} (shared storage)") from exc


def _evaluate(evaluate: Callable[[nn.Module], dict[str, float]], model: nn.Module,
              world: World) -> dict[str, float]:
    """``evaluate`` on rank 0 only; every rank gets its values bit for bit, so decisions made from them agree."""
    return distributed.broadcast_json(evaluate(model) if world.is_main else None, world)


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
    decoder: Collection[str] = (),
    evaluate_at_start: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` in place within ``cfg``'s budget; resumes from ``ckpt_dir`` if it holds a checkpoint.

    Returns the per-epoch history (epoch, cumulative optimizer steps, train loss, throughput, and
    ``evaluate``'s metrics); with ``evaluate_at_start`` a fresh run first records the untrained
    model as epoch 0. ``monitor`` names the ``evaluate`` key early stopping (``cfg.patience``)
    watches; ``transferred`` the parameters of the transfer group, ``decoder`` those of the pretrained
    decoder's group (``TrainConfig.decoder_lr_mult``). ``fingerprint`` identifies the
    run's settings: checkpoints of a different run are discarded rather than resumed; one that
    fails to load is renamed ``*.corrupt`` and the epoch before it is resumed instead (see
    :func:`genctr.training.checkpoint.resume`). In a torchrun job every rank calls ``fit`` with the
    same arguments (see the module docstring); ``on_epoch_end`` runs on every rank, ``evaluate`` on
    rank 0 only.
    """
    if cfg.patience and (monitor is None or evaluate is None):
        raise ConfigError(f"train.patience = {cfg.patience} needs a held-out metric, and this {desc} run has "
                          "none (an empty valid split?); set train.patience to 0")
    world = distributed.current()
    distributed.check_batch(cfg.batch_size, world)
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg, transferred, decoder)
    history: list[dict[str, Any]] = []
    first = 0
    meta = _resume(ckpt_dir, model, opt, fingerprint, world)  # a checkpoint that fails to load is set aside
    if meta is not None:
        history, first = meta["history"], meta["epoch"] + 1
        log.info("%s resumes after epoch %d at optimizer step %d", desc, first,
                 int(history[-1].get("steps", 0)) if history else 0)
    elif evaluate is not None and evaluate_at_start:
        history.append({"epoch": 0, "steps": 0, **_evaluate(evaluate, model, world)})
    total, n_epochs = step_budget(n_rows, cfg)
    steps = int(history[-1].get("steps", 0)) if history else 0
    # Compile the whole objective, not only ``model.forward``: pretraining objectives call
    # other methods (``pretrain_logits``), and the loss fuses into the same graph.
    # A batch of another size (the epoch's last, short one) runs eager: compiled, it would make
    # dynamo recompile the objective with a symbolic batch size (a second full compile), and the
    # full batches after it would then run the dynamic graph instead of the static one.
    step = torch.compile(objective) if cfg.compile else objective
    # every rank builds DDP at once; its constructor makes rank 0's weights everyone's
    ddp = distributed.data_parallel(model, step, world, eager=objective) if world.active else None
    for epoch in range(first, n_epochs):
        if steps >= total or (monitor is not None and should_stop(history, monitor, cfg.patience)):
            break
        torch.manual_seed(rank_seed(cfg.seed, epoch, world.rank))  # dropout and init-free randomness
        gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch))
        perm = torch.randperm(n_rows, generator=gen, device=device)  # (n_rows,): the same on every rank
        # the objective's stream: after the permutation on rank 0 (as in one process), its own elsewhere
        step_gen = gen if world.rank == 0 else torch.Generator(device=device).manual_seed(
            rank_seed(cfg.seed, epoch, world.rank))
        model.train()
        t0, total_loss, seen = time.perf_counter(), torch.zeros((), device=device), 0
        starts = range(0, min(n_rows, (total - steps) * cfg.batch_size), cfg.batch_size)  # the budget's steps
        # in logs (no TTY: pipelines, CI) a bar line every 30 s rather than every step
        bar = tqdm(starts, desc=f"{desc} epoch {epoch + 1}/{n_epochs}", disable=not cfg.progress or not world.is_main,
                   leave=False, mininterval=0.1 if sys.stderr.isatty() else 30.0)
        for s in bar:
            idx, weight = distributed.shard(perm[s : s + cfg.batch_size], world)  # (B / N,): this rank's rows
            batch = make_batch(idx)
            # the epoch's last batch, shorter than B, after full ones (a run of one batch compiles that)
            short = cfg.compile and cfg.batch_size < n_rows < s + cfg.batch_size
            with autocast(device, cfg):
                if ddp is not None:
                    loss = ddp(batch, step_gen, short=short)
                else:
                    loss = (objective if short else step)(model, batch, step_gen)
            opt.zero_grad(set_to_none=True)
            (loss if weight == 1.0 else loss * weight).backward()  # DDP averages the ranks' gradients
            if cfg.grad_clip > 0:
                clip_gradients(model, cfg.grad_clip)
            if len(opt.param_groups) > 1 and opt.param_groups[1].get("role", "transferred") == "transferred":
                opt.param_groups[1]["lr"] = transfer_lr(cfg, steps)
            opt.step()
            steps += 1
            if weight:  # a rank with no row of a short batch adds nothing
                total_loss += loss.detach() * len(idx)  # stays on device: no sync per step
                seen += len(idx)
        secs = time.perf_counter() - t0
        loss_sum, seen = _epoch_totals(total_loss, seen, world)
        row: dict[str, Any] = {"epoch": epoch + 1, "steps": steps, "rows": seen,
                               "train_loss": loss_sum / max(seen, 1), "seconds": secs,
                               "rows_per_s": seen / max(secs, 1e-9)}
        if evaluate is not None:
            row.update(_evaluate(evaluate, model, world))
        row = distributed.broadcast_json(row, world)  # rank 0's seconds: one history on every rank
        history.append(row)
        if world.is_main:
            log.info("%s epoch %d: %s", desc, epoch + 1, ", ".join(
                f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))))
            save_checkpoint(ckpt_dir, epoch, model, opt, history, fingerprint)
        distributed.barrier(world)  # the checkpoint is complete before any rank goes on
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    if monitor is not None and cfg.patience:
        if world.is_main:
            restore_best(model, history, monitor, ckpt_dir, desc)
        distributed.broadcast_module(model, world)  # every rank returns rank 0's (restored) weights
    return history


def _epoch_totals(total_loss: Tensor, seen: int, world: World) -> tuple[float, int]:
    """(sum of row losses, rows) of the epoch over all ranks; one sync per epoch."""
    if not world.active:
        return float(total_loss), seen
    loss_sum, rows = distributed.all_sum([float(total_loss), float(seen)], world)
    return loss_sum, int(rows)


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
