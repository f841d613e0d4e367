"""Transfer from a pretrained GenCTR to a CTR backbone.

* ``none``: the backbone alone, randomly initialised.
* ``share`` (parameter sharing): the backbone's item and category tables are initialised with
  *copies* of the pretrained ones. The decoder's tables are ``embed_dim`` wide by design (it
  projects them to ``d_model`` internally), so the copy is exact: no projection, and right
  after sharing the backbone's tables equal the pretrained ones. No inference cost.
* ``integrate`` (model integration): ``share`` plus a copy of the whole pretrained decoder;
  for each sample ``decoder.encode_target(history, target category)`` [B, d_model] is
  concatenated to the backbone's input and everything is fine-tuned end to end.

Every model is a :class:`CTRModel`, so state-dict keys are stable across modes:
``backbone.inputs.embedding.tables.{user,item,cate}.weight``, ``backbone.deep.*``,
``backbone.cross.*``, ``backbone.head.*``, and for ``integrate`` also ``decoder.*`` (the GenCTR
keys: ``item_embedding.weight``, ``blocks.0.*``, ``sampler.item_cate``, ...). No tensor is
shared between keys, so ``safetensors.torch.save_file`` accepts the state dict.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn

from genctr.errors import ConfigError
from genctr.models.backbones import Backbone, Batch, build_backbone
from genctr.models.config import ModelConfig
from genctr.models.genctr import GenCTR

log = logging.getLogger(__name__)


class CTRModel(nn.Module):
    """A backbone, optionally fed by a pretrained decoder.  forward(batch) -> logits [B].

    ``cfg`` is the configuration the model was built from (what a checkpoint stores beside it).
    """

    def __init__(
        self, backbone: Backbone, decoder: GenCTR | None = None, cfg: ModelConfig | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.cfg = cfg

    def forward(self, batch: Batch) -> Tensor:
        extra = None
        if self.decoder is not None:  # g(history, c_target): [B, d_model]
            extra = self.decoder.encode_target(
                batch["hist_item"], batch["hist_cate"], batch["hist_len"], batch["cate"]
            )
        return self.backbone(batch, extra)


@torch.no_grad()
def share_embeddings(backbone: Backbone, pretrained: GenCTR) -> None:
    """Copy the pretrained item and category tables into ``backbone`` (shapes must match)."""
    tables = backbone.inputs.embedding
    for field, source in (("item", pretrained.item_embedding), ("cate", pretrained.cate_embedding)):
        target = tables[field].weight
        if target.shape != source.weight.shape:
            raise ConfigError(
                f"parameter sharing: the backbone's {field} table is {tuple(target.shape)} but the "
                f"pretrained one is {tuple(source.weight.shape)}; use the same embed_dim and vocabularies"
            )
        target.copy_(source.weight)


def _check_compatible(cfg: ModelConfig, pre: ModelConfig) -> None:
    names = ["embed_dim", "n_items", "n_cates"]
    if cfg.transfer == "integrate":
        names += ["max_seq_len", "decoder"]  # the decoder's architecture is rebuilt from cfg on load
    for name in names:
        if getattr(cfg, name) != getattr(pre, name):
            raise ConfigError(
                f"transfer={cfg.transfer}: model.{name} is {getattr(cfg, name)!r} but the pretrained "
                f"GenCTR was built with {getattr(pre, name)!r}; fine-tune with the pretraining values"
            )


def build_ctr_model(
    cfg: ModelConfig, pretrained: GenCTR | None = None, *, for_loading: bool = False
) -> CTRModel:
    """The fine-tuning model for ``cfg.backbone`` x ``cfg.transfer``.

    ``pretrained`` is required for share/integrate and is never modified (the model holds
    copies). ``for_loading=True`` builds the same architecture without a pretrained model, for
    ``load_state_dict`` from a checkpoint.
    """
    if cfg.transfer == "none":
        return CTRModel(build_backbone(cfg), cfg=cfg)
    if pretrained is None:
        if not for_loading:
            raise ConfigError(
                f"transfer={cfg.transfer} needs a pretrained GenCTR (pretrain first, or set transfer=none); "
                "pass for_loading=True only to build the architecture for loading a checkpoint"
            )
        decoder = GenCTR(cfg) if cfg.transfer == "integrate" else None
        extra = decoder.out_dim if decoder is not None else 0
        return CTRModel(build_backbone(cfg, extra_dim=extra), decoder, cfg)
    _check_compatible(cfg, pretrained.cfg)
    if cfg.transfer == "share":
        backbone = build_backbone(cfg)
        share_embeddings(backbone, pretrained)
        return CTRModel(backbone, cfg=cfg)
    decoder = copy.deepcopy(pretrained).train()  # a loaded checkpoint arrives in eval mode
    backbone = build_backbone(cfg, extra_dim=decoder.out_dim)
    share_embeddings(backbone, pretrained)
    log.info("model integration: %s + GenCTR decoder (%d-wide feature)", cfg.backbone, decoder.out_dim)
    return CTRModel(backbone, decoder, cfg)


__all__ = ["CTRModel", "build_ctr_model", "share_embeddings"]
