"""Per-epoch checkpoints (safetensors + JSON) that a killed run resumes from exactly.

A checkpoint holds the model's weights, the optimizer's tensors and its scalar state;
the random streams need not be saved because every epoch reseeds from (seed, epoch).
Each checkpoint directory is written under a temporary name and renamed when complete.
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

from genctr.errors import ArtifactError


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict, list]:
    """Split ``opt.state_dict()`` into safetensors-friendly tensors and JSON scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}::{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}::{k}"] = v
    return tensors, scalars, sd["param_groups"]


def save_checkpoint(ckpt_dir: str | Path, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    history: list[dict[str, Any]], fingerprint: str = "") -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch}-", dir=ckpt_dir))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        opt_t, opt_s, groups = _optimizer_tensors(opt)
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        meta = {"epoch": epoch, "fingerprint": fingerprint, "optimizer_scalars": opt_s, "param_groups": groups, "history": history}
        (tmp / "state.json").write_text(json.dumps(meta, default=float))
        final = ckpt_dir / f"epoch-{epoch:04d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def checkpoint_fingerprint(path: Path) -> str:
    return str(json.loads((path / "state.json").read_text()).get("fingerprint", ""))


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    d = Path(ckpt_dir)
    if not d.exists():
        return None
    done = sorted(p for p in d.glob("epoch-*") if (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; returns the saved metadata."""
    try:
        meta = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"))
        opt_t = load_file(str(path / "optimizer.safetensors"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"checkpoint {path} is unreadable: {exc}") from exc
    model.load_state_dict(weights)
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in opt_t.items():
        idx, k = key.split("::")
        state.setdefault(int(idx), {})[k] = tensor
    for key, v in meta["optimizer_scalars"].items():
        idx, k = key.split("::")
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
