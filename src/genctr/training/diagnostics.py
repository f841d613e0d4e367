"""Diagnostics every run records in its history (and so in its artifact's ``metrics.json``).

* GenCTR pretraining: the held-out next-item loss (what early stopping watches), the AUC of
  the pretrained scorer at telling the true next item from its sampled negatives, and the
  AUC of item popularity (training-period counts) on the very same candidates: a scorer that
  does not beat popularity has learnt nothing a count table does not hold.
* DGenCTR pretraining: the held-out denoising loss and each field's cross-entropy, the
  label's among them (log 2 at initialisation), and the AUC of the pretrained network read
  as a CTR model before any fine-tuning (its label token masked, every other field shown, as
  fine-tuning reads it). The label's cross-entropy is taken at random noise levels, where
  most fields are masked, so it stays near log 2 even when the label is learnt; that AUC says
  what the network would tell fine-tuning about clicks.
* Fine-tuning: the drift of every transferred embedding table (mean cosine of its rows to
  the pretrained ones) and, with model integration, the integration feature's norm ratio
  (its per-dim RMS over that of the backbone's embedding inputs).

Held-out draws (negatives, noise) come from a generator reseeded at every evaluation, so
successive epochs are scored on identical candidates and their values are comparable.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genctr.evaluation.metrics import auc
from genctr.models.dgenctr_scoring import dgenctr_loss, field_cross_entropy
from genctr.models.losses import sampled_softmax_loss
from genctr.models.transfer import CTRModel
from genctr.training.data import FeatureData, Split
from genctr.training.early_stopping import Monitor, best_epoch

if TYPE_CHECKING:
    from genctr.models.dgenctr import DGenCTR
    from genctr.models.genctr import GenCTR

HELDOUT_STREAM = 0x5EED  # added to the run's seed for held-out draws
TIMING_KEYS = ("seconds", "rows_per_s")
TABLE_PREFIXES = ("backbone.inputs.embedding.tables.", "embedding.tables.")


def rowwise_auc(scores: Tensor, live: Tensor) -> Tensor:
    """scores [N, 1+K] (column 0 the positive), live [N, K] bool (real negatives) -> [N] AUC of the
    positive against the row's live negatives (ties count 1/2; NaN for a row without one)."""
    pos, neg = scores[:, :1], scores[:, 1:]
    wins = ((pos > neg).float() + 0.5 * (pos == neg).float()) * live  # [N, K]
    return wins.sum(dim=1) / live.sum(dim=1)  # NaN where live.sum() == 0


@torch.no_grad()
def next_item_heldout(model: GenCTR, data: FeatureData, windows: tuple[Tensor, Tensor, Tensor],
                      popularity: Tensor, seed: int, batch_windows: int = 256) -> dict[str, float]:
    """Held-out next-item loss, scorer AUC and popularity AUC over ``windows`` (ends, lengths,
    target_from) from :meth:`FeatureData.heldout_windows`; ``popularity`` [n_items] counts."""
    ends, lengths, target_from = windows
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=ends.device).manual_seed(seed + HELDOUT_STREAM)
    pop = torch.log1p(popularity.float())  # [n_items]: any increasing transform gives the same AUC
    loss_sum = auc_sum = pop_sum = n_rows = n_auc = 0.0
    for s in range(0, len(ends), batch_windows):
        sl = slice(s, s + batch_windows)
        batch = data.sequence_batch(ends[sl], lengths[sl])
        scores, cand, valid = model.candidate_scores(batch, gen)  # [N, 1+K] x2, [N]
        T = batch["seq_item"].shape[1]
        target = (torch.arange(T, device=ends.device)[None, :] >= target_from[sl, None]).reshape(-1)  # [N]
        rows = valid & target
        logits = model.correct_scores(scores, cand)  # log-Q correction and hit masking, as in training
        n = int(rows.sum())
        loss_sum += float(sampled_softmax_loss(logits, rows)) * n
        live = cand[:, 1:] != cand[:, :1]  # [N, K]
        rows_auc = rows & live.any(dim=1)
        auc_sum += float(rowwise_auc(scores.float(), live)[rows_auc].sum())
        pop_sum += float(rowwise_auc(pop[cand], live)[rows_auc].sum())
        n_rows += n
        n_auc += int(rows_auc.sum())
    model.train(was_training)
    nan = float("nan")
    return {"heldout_loss": loss_sum / n_rows if n_rows else nan, "heldout_auc": auc_sum / n_auc if n_auc else nan,
            "heldout_pop_auc": pop_sum / n_auc if n_auc else nan, "heldout_targets": n_rows}


@torch.no_grad()
def denoising_heldout(model: DGenCTR, data: FeatureData, split: Split, seed: int,
                      batch_size: int) -> dict[str, float]:
    """Held-out DGenCTR pretraining loss over ``split`` and each field's mean cross-entropy, in
    batches of ``batch_size`` (in-batch fields are scored against that many candidates)."""
    from genctr.models.dgenctr_config import FIELDS

    was_training = model.training
    model.eval()
    device = split.label.device
    gen = torch.Generator(device=device).manual_seed(seed + HELDOUT_STREAM)
    loss_sum, n = 0.0, 0
    ce_sum = torch.zeros(len(FIELDS), device=device)
    ce_count = torch.zeros(len(FIELDS), device=device)
    ctr_logits = []  # [B] per batch: the CTR read-out (label masked, t = the fine-tuning step)
    for s in range(0, len(split), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(split)), device=device)
        batch = data.batch(split, idx)
        out = model.pretrain_logits(batch, gen)
        ctr_logits.append(model(batch).float())
        bsz = len(idx)
        loss_sum += float(dgenctr_loss(out.logits, out.targets, out.target_mask, out.weights)) * bsz
        n += bsz
        ce = torch.where(out.target_mask, field_cross_entropy(out.logits, out.targets), 0.0)  # (F, B)
        ce_sum += ce.sum(dim=1)
        ce_count += out.target_mask.sum(dim=1)
    model.train(was_training)
    per_field = (ce_sum / ce_count).tolist()  # NaN for a field that was never a target
    labels = split.label.cpu().numpy()
    scores = torch.cat(ctr_logits).cpu().numpy() if ctr_logits else labels
    one_class = len(labels) == 0 or labels.min() == labels.max()
    return {"heldout_loss": loss_sum / n if n else float("nan"),
            **{f"heldout_ce_{name}": v for name, v in zip(FIELDS, per_field, strict=True)},
            "heldout_ctr_auc": float("nan") if one_class else auc(labels, scores)}


def table_key(name: str) -> str:
    """Parameter name -> short diagnostic key: ``...tables.item.weight`` -> ``item``,
    ``decoder.item_embedding.weight`` -> ``decoder_item_embedding``."""
    short = name.removesuffix(".weight")
    for prefix in TABLE_PREFIXES:
        short = short.removeprefix(prefix)
    return short.replace(".", "_")


def snapshot(model: nn.Module, names: tuple[str, ...]) -> dict[str, Tensor]:
    """Copies of the named parameters (the pretrained rows, taken before fine-tuning moves them)."""
    params = dict(model.named_parameters())
    return {name: params[name].detach().clone() for name in names}


@torch.no_grad()
def embedding_drift(model: nn.Module, reference: dict[str, Tensor]) -> dict[str, float]:
    """``drift_cos_<table>``: mean cosine of each table's rows to its ``reference`` rows, over the
    rows that are non-zero in the reference (padding rows left out). 1 = unchanged."""
    params = dict(model.named_parameters())
    out = {}
    for name, ref in reference.items():
        live = ref.abs().sum(dim=1) > 0  # [V]
        cos = F.cosine_similarity(params[name][live].float(), ref[live].float(), dim=1)  # [V_live]
        out[f"drift_cos_{table_key(name)}"] = float(cos.mean())
    return out


@torch.no_grad()
def integration_norm_ratio(model: CTRModel, batch: dict[str, Tensor]) -> float | None:
    """Per-dim RMS of the integration feature over that of the backbone's embedding inputs (x0 less
    the log-price column and the feature); None for a model without integration."""
    was_training = model.training
    model.eval()
    extra = model.integration_feature(batch)  # [B, D] or None
    if extra is None:
        model.train(was_training)
        return None
    x0 = model.backbone.inputs(batch, extra)  # [B, out_dim]: user | item | cate | price | ... | extra
    E = model.backbone.inputs.embedding.dim
    other = torch.cat([x0[:, : 3 * E], x0[:, 3 * E + 1 : x0.shape[1] - extra.shape[1]]], dim=1)
    model.train(was_training)
    rms = other.float().pow(2).mean().sqrt()
    return float(extra.float().pow(2).mean().sqrt() / rms.clamp_min(1e-12))


def summarize(history: list[dict[str, Any]], monitor: Monitor | None, restored: bool) -> dict[str, Any]:
    """The run's diagnostics for ``metrics.json``: the budget used, the best monitored epoch, the
    epoch whose weights the model ends with (the best one when early stopping ``restored`` it,
    else the last) with its row, and the untrained row (epoch 0) when there is one."""
    if not history:
        return {}
    last = history[-1]
    best = best_epoch(history, monitor) if monitor is not None else None
    kept = next((r for r in history if r["epoch"] == best), last) if restored and best is not None else last
    out: dict[str, Any] = {"steps": int(last.get("steps", 0)), "epochs": int(last["epoch"]),
                           "best_epoch": best, "weights_epoch": int(kept["epoch"]),
                           "final": {k: v for k, v in kept.items() if k not in TIMING_KEYS}}
    if history[0]["epoch"] == 0:
        out["init"] = dict(history[0])
    return out


__all__ = ["denoising_heldout", "embedding_drift", "integration_norm_ratio", "next_item_heldout", "rowwise_auc",
           "snapshot", "summarize", "table_key"]
