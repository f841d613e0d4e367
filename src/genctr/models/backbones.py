"""CTR backbones: DNN, DCN-V2 (parallel cross + deep) and DCN-V2 with DIN target attention.

Every backbone is ``inputs`` (embeddings + pooling -> one flat vector x0) followed by an
interaction/over arch, and returns logits; the loss lives in the training step.

Batch (see the batch contract in the lead's training loop): ``user``/``item``/``cate`` [B]
long, ``price`` [B] float, ``hist_item``/``hist_cate`` [B, L] long (oldest first, left-aligned,
positions >= ``hist_len`` are padding), ``hist_len`` [B] long.

x0 = [user | item | cate | log1p(price) | masked-mean(hist item | hist cate)
      | target-attention(hist)  (dcnv2_ta only) | extra  (integration, optional)]

Target attention (``cfg.attention``): "full" attends all L behaviours; "sim" first keeps the
``cfg.sim_top_k`` the target's category selects (``layers.retrieval.category_top_k``) and
attends those, so only [B, K, 2E] behaviour embeddings are built (the masked mean beside it
runs as embedding bags over the whole history, never building [B, L, 2E]), and the O(L) steps
(search, mean) skip the columns past every row's history.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genctr.models.config import ModelConfig
from genctr.models.layers import (
    MLP,
    CrossNet,
    FeatureEmbedding,
    TargetAttention,
    category_top_k,
    lookup,
    masked_mean,
    sequence_mask,
    used_width,
)
from genctr.models.layers.lookup import weighted_bag

Batch = dict[str, Tensor]


class InputArch(nn.Module):
    """Embeddings, history pooling and dense features -> x0 [B, out_dim].

    ``extra_dim`` > 0 reserves room for an extra input vector [B, extra_dim] (the GenCTR
    integration feature); forward then requires it.
    """

    def __init__(self, cfg: ModelConfig, target_attention: bool = False, extra_dim: int = 0) -> None:
        super().__init__()
        cfg.require_vocab()
        E = cfg.embed_dim
        self.embedding = FeatureEmbedding({"user": cfg.n_users, "item": cfg.n_items, "cate": cfg.n_cates}, E)
        self.attention = (TargetAttention(2 * E, cfg.attention_dims, pooling=cfg.attention_pooling)
                          if target_attention else None)
        self.top_k = cfg.sim_top_k if target_attention and cfg.attention == "sim" else None  # None: full
        self.extra_dim = extra_dim
        self.out_dim = 3 * E + 1 + 2 * E + (2 * E if target_attention else 0) + extra_dim

    def forward(self, batch: Batch, extra: Tensor | None = None) -> Tensor:
        emb = self.embedding
        user = emb("user", batch["user"])  # [B, E]
        target = torch.cat([emb("item", batch["item"]), emb("cate", batch["cate"])], dim=-1)  # [B, 2E]
        mask = sequence_mask(batch["hist_len"], batch["hist_item"].shape[1])  # [B, L]
        price = torch.log1p(torch.nan_to_num(batch["price"].float()).clamp_min(0.0)).unsqueeze(-1)  # [B, 1]
        parts = [user, target, price.to(user.dtype)]
        if self.attention is None:
            parts.append(self._pooled_history(batch, mask))  # [B, 2E]
        elif self.top_k is None:
            hist = self._history(batch["hist_item"], batch["hist_cate"])  # [B, L, 2E]
            parts += [masked_mean(hist, mask), self.attention(target, hist, mask)]  # [B, 2E] x2
        else:  # SIM: attend the K behaviours the hard search keeps, within the columns some row uses
            used = used_width(batch["hist_len"], mask.shape[1])
            cut = {"hist_item": batch["hist_item"][:, :used], "hist_cate": batch["hist_cate"][:, :used],
               "hist_len": batch["hist_len"]}  # [B, used] x2 (views), [B]
            mask = mask[:, :used]
            idx, keep = category_top_k(cut["hist_cate"], mask, batch["cate"], self.top_k)  # [B, K] x2
            kept = self._history(cut["hist_item"].gather(1, idx), cut["hist_cate"].gather(1, idx))  # [B, K, 2E]
            parts += [self._pooled_history(cut, mask, index_add=True), self.attention(target, kept, keep)]
        if self.extra_dim:
            if extra is None or extra.shape != (user.shape[0], self.extra_dim):
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"backbone built for an extra input [B, {self.extra_dim}], got {got}")
            parts.append(extra)
        elif extra is not None:
            raise ValueError("backbone built without an extra input (extra_dim=0) but one was passed")
        return torch.cat(parts, dim=-1)  # [B, out_dim]

    def _history(self, item: Tensor, cate: Tensor) -> Tensor:
        """Behaviour embeddings [item | cate]: item, cate [B, T] -> [B, T, 2E]."""
        emb = self.embedding
        return torch.cat([lookup(emb["item"], item), lookup(emb["cate"], cate)], dim=-1)  # [B, T, 2E]

    def _pooled_history(self, batch: Batch, mask: Tensor, index_add: bool = False) -> Tensor:
        """masked-mean(hist item | hist cate) [B, 2E] as weighted embedding bags: the [B, L, 2E]
        history is never built (value = ``masked_mean``; pad-id rows get no gradient).

        ``index_add``: the backward of :func:`~genctr.models.layers.lookup.weighted_bag` (no sort
        of the B*L indices; the same gradient up to summation order), which the SIM path uses; the
        other paths keep embedding_bag's, the backward their results were trained with.

        A served request for one user carries its history as one row expanded over the B
        candidates (stride 0): that row is pooled once and expanded (the same values; at
        L = 2000 it saves 99 of 100 passes over the history). Not while tracing, so a traced
        model keeps the general path for every batch.
        """
        item, cate, length = batch["hist_item"], batch["hist_cate"], batch["hist_len"]
        B = item.shape[0]
        if B > 1 and item.stride(0) == 0 and cate.stride(0) == 0 and length.stride(0) == 0 \
                and not torch.jit.is_tracing():
            one = {"hist_item": item[:1], "hist_cate": cate[:1], "hist_len": length[:1]}
            return self._pooled_history(one, mask[:1], index_add).expand(B, -1)  # [B, 2E]: one row, B views
        m = mask.to(self.embedding["item"].weight.dtype)  # [B, L]
        weights = m / m.sum(dim=1, keepdim=True).clamp_min(1.0)  # [B, L]: 1/count on valid slots
        if index_add:
            return torch.cat([weighted_bag(self.embedding["item"], item, weights),
                              weighted_bag(self.embedding["cate"], cate, weights)], dim=-1)  # [B, 2E]
        return torch.cat([
            F.embedding_bag(batch[key], self.embedding[field].weight, mode="sum", per_sample_weights=weights,
                            padding_idx=self.embedding[field].padding_idx)
            for key, field in (("hist_item", "item"), ("hist_cate", "cate"))
        ], dim=-1)


class Backbone(nn.Module):
    """Base of every backbone: ``inputs`` builds x0; ``forward(batch, extra=None) -> [B]`` logits."""

    inputs: InputArch

    def reset_linear(self, init: str) -> None:
        """Re-initialise every Linear of the backbone (tower, cross layers, attention MLP, head).

        "xavier": weights Xavier-normal, biases 0, which keeps the activation scale through the
        wide tower; "torch": leave PyTorch's default. Embedding tables are untouched.
        """
        if init == "torch":
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class DNN(Backbone):
    """Embeddings -> MLP -> logit.  forward(batch, extra=None) -> [B]."""

    def __init__(self, cfg: ModelConfig, extra_dim: int = 0) -> None:
        super().__init__()
        self.inputs = InputArch(cfg, target_attention=False, extra_dim=extra_dim)
        self.deep = MLP(self.inputs.out_dim, cfg.mlp_dims, cfg.dropout)
        self.head = nn.Linear(self.deep.out_dim, 1)
        self.reset_linear(cfg.init)

    def forward(self, batch: Batch, extra: Tensor | None = None) -> Tensor:
        x0 = self.inputs(batch, extra)  # [B, d]
        return self.head(self.deep(x0)).squeeze(-1)  # [B]


class DCNv2(Backbone):
    """DCN-V2, parallel structure: [CrossNet(x0) | MLP(x0)] -> logit.  forward(batch, extra) -> [B]."""

    def __init__(self, cfg: ModelConfig, extra_dim: int = 0, target_attention: bool = False) -> None:
        super().__init__()
        self.inputs = InputArch(cfg, target_attention=target_attention, extra_dim=extra_dim)
        d = self.inputs.out_dim
        self.cross = CrossNet(d, cfg.cross_layers)
        self.deep = MLP(d, cfg.mlp_dims, cfg.dropout)
        self.head = nn.Linear(d + self.deep.out_dim, 1)
        self.reset_linear(cfg.init)

    def forward(self, batch: Batch, extra: Tensor | None = None) -> Tensor:
        x0 = self.inputs(batch, extra)  # [B, d]
        z = torch.cat([self.cross(x0), self.deep(x0)], dim=-1)  # [B, d + h]
        return self.head(z).squeeze(-1)  # [B]


class DCNv2TA(DCNv2):
    """DCN-V2 whose input also holds DIN target attention over the (item, category) history."""

    def __init__(self, cfg: ModelConfig, extra_dim: int = 0) -> None:
        super().__init__(cfg, extra_dim=extra_dim, target_attention=True)


_BACKBONES: dict[str, type[Backbone]] = {"dnn": DNN, "dcnv2": DCNv2, "dcnv2_ta": DCNv2TA}


def build_backbone(cfg: ModelConfig, extra_dim: int = 0) -> Backbone:
    """The backbone ``cfg.backbone`` names, with room for an extra input of ``extra_dim``."""
    return _BACKBONES[cfg.backbone](cfg, extra_dim=extra_dim)


__all__ = ["Backbone", "Batch", "DCNv2", "DCNv2TA", "DNN", "InputArch", "build_backbone"]
