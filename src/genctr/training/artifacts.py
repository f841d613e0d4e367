"""Model artifact directories: the unit the registry stores and KServe's storageUri names.

    model.safetensors   weights (never pickle)
    config.json         {"format": 1, "genctr_version", "kind", "model": {...}, "feature_service", ...}
    vocab/              the feature build's vocabularies (raw id -> index), Parquet
    items/              item -> category table of the build (for scoring unseen candidates)
    metrics.json        evaluation metrics and per-epoch history
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genctr import __version__
from genctr.errors import ArtifactError
from genctr.features.layout import BuildLayout

FORMAT = 1
REQUIRED_FILES = ("model.safetensors", "config.json")


def save_artifact(out_dir: str | Path, model: torch.nn.Module, config: dict[str, Any],
                  build_dir: str | Path | None, metrics: dict[str, Any]) -> Path:
    """Write the artifact under a temp name beside ``out_dir``, then rename it into place."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        full = {"format": FORMAT, "genctr_version": __version__, **config}
        (tmp / "config.json").write_text(json.dumps(full, indent=2, default=str))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        if build_dir is not None:
            layout = BuildLayout(build_dir)
            shutil.copytree(layout.root / "vocab", tmp / "vocab")
            shutil.copytree(layout.items, tmp / "items")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_config(model_dir: str | Path) -> dict[str, Any]:
    d = Path(model_dir)
    missing = [f for f in REQUIRED_FILES if not (d / f).exists()]
    if missing:
        raise ArtifactError(f"{d} is not a model artifact: missing {missing}")
    cfg = json.loads((d / "config.json").read_text())
    if cfg.get("format") != FORMAT:
        raise ArtifactError(f"{d}: artifact format {cfg.get('format')!r} is not supported (expected {FORMAT})")
    return cfg


def load_weights(model_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"), device=str(device))
