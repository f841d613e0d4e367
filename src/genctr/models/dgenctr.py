"""DGenCTR: discrete-diffusion generative pretraining over whole samples, then CTR fine-tuning.

A sample is the unordered set of its field tokens (``FIELDS``: user, item, cate, price
bucket, the behaviour sequence pooled into one token, and the click label). Pretraining
masks each field with probability λ(t) and asks a bidirectional transformer to recover
the masked ones; each field is scored by its own head G_k with a cosine sampled softmax
over in-batch negatives. Fine-tuning runs the same network with only the label masked.

Training loop:

    pre = DGenCTR(cfg, n_users=..., n_items=..., n_cates=...)
    out = pre.pretrain_logits(batch, generator)            # generator on the batch's device
    loss = dgenctr_loss(out.logits, out.target_mask, out.weights)

    ft = DGenCTR(cfg, n_users=..., n_items=..., n_cates=...)
    transfer(pre, ft)                                      # mode = cfg.transfer
    logits = ft(batch)                                     # [B]; BCEWithLogits vs batch["label"]

Batch: ``user``/``item``/``cate`` [B] long, ``price`` [B] float, ``hist_item``/``hist_cate``
[B, L] long (left-aligned, oldest first), ``hist_len`` [B] long, and for pretraining
``label`` [B] float 0/1 (fine-tuning never reads it).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genctr.errors import ConfigError, DataValidationError
from genctr.models.dgenctr_config import (
    FIELD_INDEX,
    FIELDS,
    LABEL,
    N_FIELDS,
    SEQ,
    TRANSFER_MODES,
    DGenCTRConfig,
)
from genctr.models.dgenctr_layers import Denoiser, FieldEmbedding, ScoringHeads
from genctr.models.dgenctr_noise import FINETUNE_T, draw_noise, loss_weight

FINETUNE_KEYS = ("user", "item", "cate", "price", "hist_item", "hist_cate", "hist_len")
PRETRAIN_KEYS = FINETUNE_KEYS + ("label",)
ITEM, CATE = FIELD_INDEX["item"], FIELD_INDEX["cate"]
SEQ_DUP_TOL = 1e-5  # pooled sequence targets whose cosine is within this of 1 count as equal

# Parameter-name prefixes copied by each transfer mode ("" matches every tensor).
TRANSFER_PREFIXES: dict[str, tuple[str, ...]] = {
    "full": ("",),
    "embedding_only": ("embedding.",),
    "scorer_only": ("denoiser.", "heads."),
}


class PretrainOutput(NamedTuple):
    """What ``pretrain_logits`` returns; fields in canonical ``FIELDS`` order."""

    logits: Tensor  # (F, B, B): cos(G_k(X_t)_i, e(f_k of sample j)) / τ; the true value is j = i,
    #                 in-batch copies of it are -inf (never negatives)
    target_mask: Tensor  # (F, B) bool: field k of sample i is masked and a loss target
    weights: Tensor  # (F, B) float: loss = Σ weights · CE; zero off target_mask
    t: Tensor  # (B,) long: diffusion step of each sample (for logging)


class DGenCTR(nn.Module):
    """Denoiser over field tokens; the same module is pretrained and fine-tuned.

    Named parts (also the transfer groups): ``embedding`` (tables, [MASK] and type vectors,
    sequence pooling), ``denoiser`` (timestep embedding + transformer), ``heads`` (G_k).
    ``field_order`` is only the order tokens are stacked in; outputs do not depend on it.
    """

    def __init__(self, cfg: DGenCTRConfig, *, n_users: int, n_items: int, n_cates: int) -> None:
        super().__init__()
        self.vocab_sizes = {"user": n_users, "item": n_items, "cate": n_cates}
        for name, size in self.vocab_sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise ConfigError(f"DGenCTR: vocabulary size of {name} must be an integer >= 2, got {size!r}")
        self.cfg = cfg
        vocab = {**self.vocab_sizes, "price": cfg.n_price, "label": 2}
        self.embedding = FieldEmbedding(cfg, vocab)
        self.denoiser = Denoiser(cfg)
        self.heads = ScoringHeads(cfg)
        self.field_order: tuple[str, ...] = FIELDS

    # ----------------------------------------------------------------- pretraining
    def pretrain_logits(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        *,
        t: Tensor | None = None,
        masked: Tensor | None = None,
    ) -> PretrainOutput:
        """Noise the batch, denoise it and score every field against in-batch candidates.

        ``t`` [B] and ``masked`` [B, F] override the random draw (evaluation, tests).
        """
        _check_batch(batch, PRETRAIN_KEYS)
        bsz, device = batch["item"].shape[0], batch["item"].device
        if t is None or masked is None:
            t_draw, m_draw = draw_noise(bsz, self.cfg, generator, device)
            t = t_draw if t is None else t
            masked = m_draw if masked is None else masked
        if not self.cfg.label_in_pretraining:
            masked = masked.clone()
            masked[:, LABEL] = True  # the denoiser never sees the label
        ids = self.embedding.value_ids(batch, with_label=True)
        vals = self.embedding.lookup(ids)  # each (B, d)
        # The sequence token attends with the *noised* item/cate as query, so a masked target
        # item does not leak through the pooling; its target is pooled with the clean query.
        mask_vec = self.embedding.mask
        item_in = torch.where(masked[:, ITEM, None], mask_vec[ITEM], vals["item"])
        cate_in = torch.where(masked[:, CATE, None], mask_vec[CATE], vals["cate"])
        query = torch.stack([vals["item"] + vals["cate"], item_in + cate_in], dim=1)  # (B, 2, d)
        pooled = self.embedding.pool(batch, query)
        seq_target, seq_in = pooled[:, 0], pooled[:, 1]

        values = torch.stack([seq_in if n == "seq" else vals[n] for n in FIELDS], dim=1)  # (B, F, d)
        out = self.heads(self._denoise(values, masked, t))  # (B, F, d)
        targets = torch.stack([seq_target if n == "seq" else vals[n] for n in FIELDS])  # (F, B, d)
        logits = _cosine(out.transpose(0, 1), targets) / self.cfg.temperature  # (F, B, B)
        logits = logits.masked_fill(_duplicates(ids, seq_target), float("-inf"))

        target_mask = masked.T.clone()  # (F, B)
        if not self.cfg.label_in_pretraining:
            target_mask[LABEL] = False
        return PretrainOutput(logits, target_mask, self._weights(t, target_mask), t)

    def _weights(self, t: Tensor, target_mask: Tensor) -> Tensor:
        """(F, B) coefficients: schedule weight, normalised to a mean over (field, sample)."""
        w = loss_weight(t, self.cfg)[None, :] * target_mask  # (F, B)
        if self.cfg.loss_weighting == "none":
            return w / target_mask.sum().clamp(min=1)  # plain mean over masked fields
        n_targetable = N_FIELDS - (0 if self.cfg.label_in_pretraining else 1)
        return w / (t.shape[0] * n_targetable)  # E[mask · w] = 1: unbiased mean per-field CE

    # ----------------------------------------------------------------- fine-tuning
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """CTR logits [B]: the label token is always masked, t = FINETUNE_T.

        logit = (cos(G_label(h), e(1)) - cos(G_label(h), e(0))) / τ, i.e. the pretraining
        label softmax over {0, 1}, so sigmoid(logit) = p(y = 1 | the other fields).
        """
        _check_batch(batch, FINETUNE_KEYS)
        ids = self.embedding.value_ids(batch, with_label=False)
        vals = self.embedding.lookup(ids)
        vals["seq"] = self.embedding.pool(batch, (vals["item"] + vals["cate"])[:, None])[:, 0]
        vals["label"] = torch.zeros_like(vals["item"])  # placeholder; replaced by the label [MASK]
        values = torch.stack([vals[n] for n in FIELDS], dim=1)  # (B, F, d)
        bsz = values.shape[0]
        masked = torch.zeros(bsz, N_FIELDS, dtype=torch.bool, device=values.device)
        masked[:, LABEL] = True
        t = torch.full((bsz,), FINETUNE_T, dtype=torch.long, device=values.device)
        h = self._denoise(values, masked, t)
        g = self.heads(h[:, LABEL : LABEL + 1], fields=[LABEL])[:, 0]  # (B, d)
        cos = _cosine(g, self.embedding.label_table())  # (B, 2): against e(0), e(1)
        return (cos[:, 1] - cos[:, 0]) / self.cfg.temperature

    # ----------------------------------------------------------------- shared
    def _denoise(self, values: Tensor, masked: Tensor, t: Tensor) -> Tensor:
        """values [B, F, d] and masked [B, F] in FIELDS order -> denoiser output [B, F, d]."""
        tokens = self.embedding.tokens(values, masked)
        perm = torch.tensor([FIELD_INDEX[n] for n in self.field_order], device=values.device)
        h = self.denoiser(tokens[:, perm], t)  # tokens stacked in field_order
        return h[:, torch.argsort(perm)]  # back to FIELDS order


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """[..., n, d] x [..., m, d] -> [..., n, m] cosines, in float32 even under autocast
    (bf16 would blur scores that are then scaled by 1/τ)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(-1, -2)


def _duplicates(ids: dict[str, Tensor], seq_target: Tensor) -> Tensor:
    """(F, B, B) bool: candidate j carries the same value as sample i's true value (j != i)."""
    bsz = seq_target.shape[0]
    off_diag = ~torch.eye(bsz, dtype=torch.bool, device=seq_target.device)
    rows = []
    for name in FIELDS:
        if name == "seq":
            z = F.normalize(seq_target.detach().float(), dim=-1)
            same = (z @ z.T) > 1.0 - SEQ_DUP_TOL
        else:
            same = ids[name][:, None] == ids[name][None, :]
        rows.append(same & off_diag)
    return torch.stack(rows)


def dgenctr_loss(logits: Tensor, target_mask: Tensor, weights: Tensor) -> Tensor:
    """Scalar pretraining loss: Σ_k,i weights[k, i] · CE(logits[k, i], i) over target_mask.

    logits (F, B, B) with the true value on the diagonal; fields off ``target_mask`` get
    neither loss nor gradient.
    """
    n_fields, bsz, _ = logits.shape
    target = torch.arange(bsz, device=logits.device).repeat(n_fields)
    ce = F.cross_entropy(logits.float().reshape(n_fields * bsz, bsz), target, reduction="none")
    ce = ce.view(n_fields, bsz)
    return (torch.where(target_mask, ce, torch.zeros_like(ce)) * weights).sum()


@torch.no_grad()
def transfer(pretrained: DGenCTR, finetune_model: DGenCTR, mode: str | None = None) -> list[str]:
    """Copy pretrained tensors into ``finetune_model`` in place; returns the copied names.

    mode (default ``finetune_model.cfg.transfer``): full = every tensor; embedding_only =
    ``embedding.*``; scorer_only = ``denoiser.*`` and ``heads.*``.
    """
    mode = finetune_model.cfg.transfer if mode is None else mode
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"transfer mode must be one of {TRANSFER_MODES}, got {mode!r}")
    src, dst = pretrained.state_dict(), finetune_model.state_dict()
    if set(src) != set(dst):
        raise ConfigError(
            f"cannot transfer: parameter names differ ({sorted(set(src) ^ set(dst))[:5]}...)"
        )
    names = [n for n in src if n.startswith(TRANSFER_PREFIXES[mode])]
    for name in names:
        if src[name].shape != dst[name].shape:
            raise ConfigError(
                f"cannot transfer {name}: pretrained shape {tuple(src[name].shape)} != "
                f"fine-tune shape {tuple(dst[name].shape)}; build both models with the same "
                "vocabularies, embed_dim, head settings and timesteps"
            )
    for name in names:
        dst[name].copy_(src[name])  # state_dict tensors share storage with the parameters
    return names


def _check_batch(batch: dict[str, Tensor], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise DataValidationError(f"DGenCTR batch is missing {missing}; it needs {list(keys)}")


__all__ = [
    "DGenCTR",
    "DGenCTRConfig",
    "PretrainOutput",
    "dgenctr_loss",
    "transfer",
    "TRANSFER_PREFIXES",
    "FIELDS",
    "LABEL",
    "SEQ",
]
