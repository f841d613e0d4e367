"""Transfer from a pretrained GenCTR to a CTR backbone.

* ``none``: the backbone alone, randomly initialised.
* ``share`` (parameter sharing): the backbone's item and category tables are initialised with
  *copies* of the pretrained ones. The decoder's tables are ``embed_dim`` wide by design (it
  projects them to ``d_model`` internally), so the copy is exact: no projection, and right
  after sharing the backbone's tables equal the pretrained ones. No inference cost.
* ``integrate`` (model integration): ``share`` plus a copy of the whole pretrained decoder;
  for each sample ``decoder.encode_target(history, target category)`` [B, d_model] is
  concatenated to the backbone's input and everything is fine-tuned end to end. With
  ``integration_scale="match"`` (the default) the feature passes through
  :class:`~genctr.models.integration.IntegrationScale` first, so it enters x0 at the scale of
  the embeddings beside it rather than ~10x louder.

Every model is a :class:`CTRModel`, so state-dict keys are stable across modes:
``backbone.inputs.embedding.tables.{user,item,cate}.weight``, ``backbone.deep.*``,
``backbone.cross.*``, ``backbone.head.*``, and for ``integrate`` also ``decoder.*`` (the GenCTR
keys: ``item_embedding.weight``, ``blocks.0.*``, ``sampler.item_cate``, ...) and, with
``integration_scale="match"``, ``integration.scale``. No tensor is shared between keys, so
``safetensors.torch.save_file`` accepts the state dict.

``CTRModel.transferred_tables`` names the embedding tables initialised from pretraining (what
the fine-tuning loop's transfer learning-rate multiplier and freeze act on, and what the drift
diagnostic compares with the pretrained rows).
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
from genctr.models.integration import IntegrationScale, embedding_rms

log = logging.getLogger(__name__)


class CTRModel(nn.Module):
    """A backbone, optionally fed by a pretrained decoder.  forward(batch) -> logits [B].

    ``cfg`` is the configuration the model was built from (what a checkpoint stores beside it);
    ``integration`` rescales the decoder feature (None: it is used raw); ``transferred_tables``
    are the parameter names of the embedding tables copied from pretraining.
    """

    def __init__(
        self, backbone: Backbone, decoder: GenCTR | None = None, cfg: ModelConfig | None = None,
        integration: IntegrationScale | None = None, transferred_tables: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.integration = integration
        self.cfg = cfg
        self.transferred_tables = transferred_tables

    @property
    def decoder_parameters(self) -> tuple[str, ...]:
        """Names of the pretrained decoder's parameters, its own copies of the item and category
        tables included (the fine-tuning loop's decoder group, ``TrainConfig.decoder_lr_mult``, which
        takes them from the transfer group); () without a decoder."""
        if self.decoder is None:
            return ()
        return tuple(n for n, _ in self.named_parameters() if n.startswith("decoder."))

    def integration_feature(self, batch: Batch) -> Tensor | None:
        """What the backbone receives beside its own inputs: [B, d_model], or None without a decoder."""
        if self.decoder is None:
            return None
        g = self.decoder.encode_target(batch["hist_item"], batch["hist_cate"], batch["hist_len"], batch["cate"])
        return g if self.integration is None else self.integration(g)  # [B, d_model]

    def forward(self, batch: Batch) -> Tensor:
        return self.backbone(batch, self.integration_feature(batch))


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


SHARED_TABLES = ("backbone.inputs.embedding.tables.item.weight", "backbone.inputs.embedding.tables.cate.weight")
DECODER_TABLES = ("decoder.item_embedding.weight", "decoder.cate_embedding.weight")


def _transferred_tables(transfer: str) -> tuple[str, ...]:
    return {"none": (), "share": SHARED_TABLES, "integrate": SHARED_TABLES + DECODER_TABLES}[transfer]


def _integration(cfg: ModelConfig, backbone: Backbone) -> IntegrationScale | None:
    """The integration feature's scale layer, initialised to the backbone's embedding scale."""
    if cfg.integration_scale == "none":
        return None
    emb = backbone.inputs.embedding
    return IntegrationScale(embedding_rms(emb[name] for name in ("user", "item", "cate")))


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
        backbone = build_backbone(cfg, extra_dim=extra)
        # the scale comes from the file (and a meta-device build has no values to measure)
        integration = IntegrationScale() if decoder is not None and cfg.integration_scale == "match" else None
        return CTRModel(backbone, decoder, cfg, integration, _transferred_tables(cfg.transfer))
    _check_compatible(cfg, pretrained.cfg)
    tables = _transferred_tables(cfg.transfer)
    if cfg.transfer == "share":
        backbone = build_backbone(cfg)
        share_embeddings(backbone, pretrained)
        return CTRModel(backbone, cfg=cfg, transferred_tables=tables)
    decoder = copy.deepcopy(pretrained).train()  # a loaded checkpoint arrives in eval mode
    backbone = build_backbone(cfg, extra_dim=decoder.out_dim)
    share_embeddings(backbone, pretrained)
    integration = _integration(cfg, backbone)  # after sharing: the scale of the pretrained tables
    log.info("model integration: %s + GenCTR decoder (%d-wide feature, scale %s)", cfg.backbone, decoder.out_dim,
             "raw" if integration is None else f"{float(integration.scale.detach()):.4g}")
    return CTRModel(backbone, decoder, cfg, integration, tables)


__all__ = ["CTRModel", "DECODER_TABLES", "SHARED_TABLES", "build_ctr_model", "share_embeddings"]
