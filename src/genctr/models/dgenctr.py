"""DGenCTR: discrete-diffusion generative pretraining over whole samples, then CTR fine-tuning.

A sample is the unordered set of its field tokens (``FIELDS``: user, item, cate, price
bucket, the behaviour sequence pooled into one token, and the click label). Pretraining
masks each field with probability λ(t) and asks a bidirectional transformer to recover
the masked ones; each field is scored by its own head G_k with a cosine softmax, over its
whole vocabulary for small fields (the label, price buckets) and over in-batch values for
large ones (``genctr.models.dgenctr_scoring``). Fine-tuning runs the same network with only
the label masked.

Training loop:

    pre = DGenCTR(cfg, n_users=..., n_items=..., n_cates=...)
    out = pre.pretrain_logits(batch, generator)            # generator on the batch's device
    loss = dgenctr_loss(out.logits, out.targets, out.target_mask, out.weights)

    ft = DGenCTR(cfg, n_users=..., n_items=..., n_cates=...)
    transfer(pre, ft)                                      # mode = cfg.transfer
    logits = ft(batch)                                     # [B]; BCEWithLogits vs batch["label"]

Batch: ``user``/``item``/``cate`` [B] long, ``price`` [B] float, ``hist_item``/``hist_cate``
[B, L] long (left-aligned, oldest first), ``hist_len`` [B] long, and for pretraining
``label`` [B] float 0/1 (fine-tuning never reads it) and optionally ``label_known`` [B] bool:
a sample whose label is not known has its label token masked and is no label target.
"""
from __future__ import annotations

from typing import NamedTuple, cast

import torch
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
from genctr.models.dgenctr_scoring import (
    cosine,
    dgenctr_loss,
    field_losses,
    full_vocab_logits,
    in_batch_logits,
    same_sequence,
    stack_fields,
)

FINETUNE_KEYS = ("user", "item", "cate", "price", "hist_item", "hist_cate", "hist_len")
PRETRAIN_KEYS = FINETUNE_KEYS + ("label",)
ITEM, CATE = FIELD_INDEX["item"], FIELD_INDEX["cate"]

# Parameter-name prefixes copied by each transfer mode ("" matches every tensor), and those each
# leaves out. ``encoder`` copies the network that reads a sample (tables, [MASK] and type vectors,
# pooling, transformer) and starts the label's value table e(0), e(1) and the heads G_k fresh.
TRANSFER_PREFIXES: dict[str, tuple[str, ...]] = {
    "full": ("",),
    "embedding_only": ("embedding.",),
    "scorer_only": ("denoiser.", "heads."),
    "encoder": ("embedding.", "denoiser."),
}
TRANSFER_EXCLUDED: dict[str, tuple[str, ...]] = {"encoder": ("embedding.tables.label.",)}


class PretrainOutput(NamedTuple):
    """What ``pretrain_logits`` returns; fields in canonical ``FIELDS`` order."""

    logits: Tensor  # (F, B, C): cos(G_k(X_t)_i, candidate c) / τ; candidates are the field's table rows
    #                 (full-vocabulary fields) or the batch's values (in-batch copies of the true value
    #                 -inf); columns past a field's candidates -inf
    targets: Tensor  # (F, B) long: the true value's column (its value, or i for in-batch fields)
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
        # fields scored against their whole table (see DGenCTRConfig.full_softmax_vocab)
        self.full_vocab_fields: tuple[str, ...] = tuple(
            n for n in FIELDS if n in vocab and vocab[n] <= cfg.full_softmax_vocab)
        # names of the parameters copied from pretraining (set by ``transfer``)
        self.copied_parameters: tuple[str, ...] = ()

    @property
    def transferred_tables(self) -> tuple[str, ...]:
        """The copied embedding tables (what the drift diagnostics read)."""
        return tuple(n for n in self.copied_parameters if n.startswith("embedding.tables."))

    @property
    def transfer_group(self) -> tuple[str, ...]:
        """What the fine-tuning loop's transfer learning rate acts on: the copied tables, or with
        ``cfg.transfer_group="all"`` every copied parameter."""
        return self.copied_parameters if self.cfg.transfer_group == "all" else self.transferred_tables

    # ----------------------------------------------------------------- pretraining
    def pretrain_logits(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        *,
        t: Tensor | None = None,
        masked: Tensor | None = None,
    ) -> PretrainOutput:
        """Noise the batch, denoise it and score every field against its candidates.

        ``t`` [B] and ``masked`` [B, F] override the random draw (evaluation, tests).
        """
        _check_batch(batch, PRETRAIN_KEYS)
        bsz, device = batch["item"].shape[0], batch["item"].device
        if t is None or masked is None:
            t_draw, m_draw = draw_noise(bsz, self.cfg, generator, device)
            t = t_draw if t is None else t
            masked = m_draw if masked is None else masked
        known = batch.get("label_known")  # [B] bool or None (every label known)
        if not self.cfg.label_in_pretraining:
            masked = masked.clone()
            masked[:, LABEL] = True  # the denoiser never sees the label
        elif known is not None:
            masked = masked.clone()
            masked[:, LABEL] |= ~known  # nor an unlabelled sample's
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
        targets = {**vals, "seq": seq_target}
        logits, columns = self._score(out, targets, ids)

        target_mask = masked.T.clone()  # (F, B)
        if not self.cfg.label_in_pretraining:
            target_mask[LABEL] = False
        elif known is not None:
            target_mask[LABEL] &= known
        return PretrainOutput(logits, columns, target_mask, self._weights(t, target_mask), t)

    def _score(self, out: Tensor, targets: dict[str, Tensor], ids: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Head outputs (B, F, d) -> logits (F, B, C) and the true columns (F, B), FIELDS order."""
        bsz = out.shape[0]
        in_batch = [k for k, n in enumerate(FIELDS) if n not in self.full_vocab_fields]
        same = torch.stack([same_sequence(targets["seq"]) if FIELDS[k] == "seq"
                            else ids[FIELDS[k]][:, None] == ids[FIELDS[k]][None, :] for k in in_batch])
        batched = in_batch_logits(out[:, in_batch].transpose(0, 1),
                                  torch.stack([targets[FIELDS[k]] for k in in_batch]), same,
                                  self.cfg.temperature)  # (F_in, B, B), one batched matmul
        per_field, columns = [], []
        diagonal = torch.arange(bsz, device=out.device)
        for k, name in enumerate(FIELDS):
            if name in self.full_vocab_fields:
                table = cast(nn.Embedding, self.embedding.tables[name])  # every table is an nn.Embedding
                per_field.append(full_vocab_logits(out[:, k], table, ids[name], self.cfg.temperature))
                columns.append(ids[name])
            else:
                per_field.append(batched[in_batch.index(k)])
                columns.append(diagonal)
        return stack_fields(per_field), torch.stack(columns)

    def _weights(self, t: Tensor, target_mask: Tensor) -> Tensor:
        """(F, B) coefficients: schedule weight, normalised to a mean over (field, sample)."""
        w = loss_weight(t, self.cfg)[None, :] * target_mask  # (F, B)
        if self.cfg.label_loss_weight != 1.0:
            w[LABEL] *= self.cfg.label_loss_weight
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
        cos = cosine(g, self.embedding.label_table())  # (B, 2): against e(0), e(1)
        return (cos[:, 1] - cos[:, 0]) / self.cfg.temperature

    # ----------------------------------------------------------------- shared
    def _denoise(self, values: Tensor, masked: Tensor, t: Tensor) -> Tensor:
        """values [B, F, d] and masked [B, F] in FIELDS order -> denoiser output [B, F, d]."""
        tokens = self.embedding.tokens(values, masked)
        perm = torch.tensor([FIELD_INDEX[n] for n in self.field_order], device=values.device)
        h = self.denoiser(tokens[:, perm], t)  # tokens stacked in field_order
        return h[:, torch.argsort(perm)]  # back to FIELDS order


@torch.no_grad()
def transfer(pretrained: DGenCTR, finetune_model: DGenCTR, mode: str | None = None) -> list[str]:
    """Copy pretrained tensors into ``finetune_model`` in place; returns the copied names.

    mode (default ``finetune_model.cfg.transfer``): full = every tensor; embedding_only =
    ``embedding.*``; scorer_only = ``denoiser.*`` and ``heads.*``; encoder = ``embedding.*`` and
    ``denoiser.*`` but the label's value table. Sets ``finetune_model.copied_parameters``, from
    which its ``transferred_tables`` and ``transfer_group`` follow.
    """
    mode = finetune_model.cfg.transfer if mode is None else mode
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"transfer mode must be one of {TRANSFER_MODES}, got {mode!r}")
    src, dst = pretrained.state_dict(), finetune_model.state_dict()
    if set(src) != set(dst):
        raise ConfigError(
            f"cannot transfer: parameter names differ ({sorted(set(src) ^ set(dst))[:5]}...)"
        )
    names = [n for n in src if n.startswith(TRANSFER_PREFIXES[mode])
             and not n.startswith(TRANSFER_EXCLUDED.get(mode, ()))]
    for name in names:
        if src[name].shape != dst[name].shape:
            raise ConfigError(
                f"cannot transfer {name}: pretrained shape {tuple(src[name].shape)} != "
                f"fine-tune shape {tuple(dst[name].shape)}; build both models with the same "
                "vocabularies, embed_dim, head settings and timesteps"
            )
    for name in names:
        dst[name].copy_(src[name])  # state_dict tensors share storage with the parameters
    trainable = {n for n, _ in finetune_model.named_parameters()}  # buffers are copied but not trained
    finetune_model.copied_parameters = tuple(n for n in names if n in trainable)
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
    "field_losses",
    "transfer",
    "TRANSFER_PREFIXES",
    "TRANSFER_EXCLUDED",
    "FIELDS",
    "LABEL",
    "SEQ",
]
