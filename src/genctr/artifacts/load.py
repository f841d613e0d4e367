"""Rebuilding a model from its artifact directory (``config.json`` + ``model.safetensors``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genctr.artifacts.files import FIX, load_weights, read_config
from genctr.artifacts.kinds import kind_of
from genctr.errors import ArtifactError, GenCTRError, describe


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from its artifact (config.json + safetensors), in eval mode.

    The network is first built on the meta device (no memory, no init), so a config with absurd
    sizes fails cheaply and the weights are checked against its exact names/shapes/dtypes
    before anything real is allocated. Every failure is an ArtifactError naming the file.
    """
    meta = read_config(model_dir)
    try:
        with torch.device("meta"):
            skeleton = kind_of(meta, model_dir).build(meta, Path(model_dir))
    except ArtifactError:
        raise
    except (GenCTRError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ArtifactError(f"{Path(model_dir) / 'config.json'} does not describe a valid "
                            f"{describe(meta['kind'], raw=True)} model ({describe(str(exc), raw=True)}); "
                            f"{FIX}") from exc
    weights = load_weights(model_dir, "cpu", expected=skeleton.state_dict())  # copied into the CPU net, then moved
    net = kind_of(meta, model_dir).build(meta, Path(model_dir))
    net.load_state_dict(weights)
    return net.to(device).eval()


def max_seq_len_of(model_dir: str | Path) -> int:
    """History length the model's batches carry."""
    meta = read_config(model_dir)
    value = meta["model"].get("max_seq_len") or meta.get("max_seq_len", 200)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArtifactError(f"{Path(model_dir) / 'config.json'}: max_seq_len must be a positive integer, "
                            f"got {describe(value, raw=True)}; {FIX}")
    return value
