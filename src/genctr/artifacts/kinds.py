"""Model kinds: what an artifact's ``config.json`` ``kind`` names, and how each kind is rebuilt.

One table from kind to its config class and builder; everything that branches on a kind
(training, loading, serving, the gate) reads it here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from genctr.artifacts.files import FIX
from genctr.config import from_dict
from genctr.errors import ArtifactError, describe
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig

KIND_GENCTR = "genctr_pretrain"
KIND_CTR = "ctr"
KIND_DGENCTR = "dgenctr_pretrain"
KIND_DGENCTR_CTR = "dgenctr_ctr"


@dataclass(frozen=True)
class ModelKind:
    """``config_cls`` parses ``config.json``'s ``model`` section; ``build(meta, model_dir)`` makes the
    (untrained) network; ``ctr``: its ``forward(batch)`` returns CTR logits (servable, gateable)."""

    name: str
    config_cls: type
    build: Callable[[dict[str, Any], Path], nn.Module]
    ctr: bool


def _genctr(meta: dict[str, Any], model_dir: Path) -> nn.Module:
    from genctr.models.genctr import GenCTR

    return GenCTR(from_dict(ModelConfig, meta["model"]))


def _ctr(meta: dict[str, Any], model_dir: Path) -> nn.Module:
    from genctr.models.transfer import build_ctr_model

    # a model section written before integration_scale existed describes the raw decoder feature
    model = {"integration_scale": "none", **meta["model"]}
    return build_ctr_model(from_dict(ModelConfig, model), None, for_loading=True)


def _dgenctr(meta: dict[str, Any], model_dir: Path) -> nn.Module:
    from genctr.models.dgenctr import DGenCTR

    v = meta.get("vocab")
    if not isinstance(v, dict):
        raise ArtifactError(f"{model_dir / 'config.json'}: a {meta['kind']} model needs a 'vocab' object "
                            f"of table sizes, got {describe(v, raw=True)}; {FIX}")
    return DGenCTR(from_dict(DGenCTRConfig, meta["model"]), n_users=v["user"], n_items=v["item"],
                   n_cates=v["category"])


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind(KIND_GENCTR, ModelConfig, _genctr, ctr=False),
    ModelKind(KIND_CTR, ModelConfig, _ctr, ctr=True),
    ModelKind(KIND_DGENCTR, DGenCTRConfig, _dgenctr, ctr=False),
    # fine-tuned from DGenCTR: the same network, read as a CTR model
    ModelKind(KIND_DGENCTR_CTR, DGenCTRConfig, _dgenctr, ctr=True),
)}
CTR_KINDS = tuple(name for name, k in KINDS.items() if k.ctr)  # artifacts whose forward(batch) is CTR logits


def kind_of(meta: dict[str, Any], model_dir: str | Path) -> ModelKind:
    """The :class:`ModelKind` a read ``config.json`` names (ArtifactError for an unknown one)."""
    kind = meta["kind"]
    if kind not in KINDS:
        raise ArtifactError(f"{model_dir}: unknown model kind {describe(kind, raw=True)} in config.json (known: "
                            f"{sorted(KINDS)}); {FIX}")
    return KINDS[kind]
