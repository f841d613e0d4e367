"""Per-epoch checkpoints (safetensors + JSON) that a killed run resumes from exactly.

A checkpoint holds the model's weights, the optimizer's tensors and its scalar state;
the random streams need not be saved because every epoch reseeds from (seed, epoch).
Each checkpoint directory is written under a unique temporary name, its files flushed to
disk, and renamed into place when complete. On resume a checkpoint that fails to load
(truncated by a full disk, a crash mid-copy, tampering) is renamed ``<name>.corrupt`` with a
warning and the previous epoch's checkpoint is used instead, so one bad file never blocks
a rerun and no evidence is deleted.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genctr.artifacts.files import check_tensors
from genctr.atomic import publish
from genctr.errors import ArtifactError, describe

log = logging.getLogger(__name__)

EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")  # completed checkpoints; "<name>.corrupt" never matches


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


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(ckpt_dir: str | Path, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    history: list[dict[str, Any]], fingerprint: str = "") -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch}-", dir=ckpt_dir))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        opt_t, opt_s, groups = _optimizer_tensors(opt)
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        meta = {"epoch": epoch, "fingerprint": fingerprint, "optimizer_scalars": opt_s, "param_groups": groups,
                "history": history}
        (tmp / "state.json").write_text(json.dumps(meta, default=float))
        for f in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
            _fsync(f)
        final = checkpoint_path(ckpt_dir, epoch)
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def completed_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``epoch-NNNN`` directories holding a state.json, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    done = [(int(m.group(1)), p) for p in d.iterdir()
            if (m := EPOCH_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(done, key=lambda epoch_path: epoch_path[0])]


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint, checked for the fields a resume uses."""
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"checkpoint {path}/state.json is unreadable: {describe(str(exc), raw=True)}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"checkpoint {path}/state.json must hold a JSON object")
    want = {"epoch": int, "fingerprint": str, "optimizer_scalars": dict, "param_groups": list, "history": list}
    bad = [k for k, t in want.items() if not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)]
    if bad:
        raise ArtifactError(f"checkpoint {path}/state.json lacks or mistypes {bad}")
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"checkpoint file {path} is unreadable: {describe(str(exc), raw=True)}") from exc


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; returns the saved metadata.

    Every file is read and checked against ``model`` and ``opt`` before either is touched, so
    an ArtifactError leaves both exactly as they were.
    """
    meta = read_state(path)
    weights = _read_tensors(path / "model.safetensors")
    opt_t = _read_tensors(path / "optimizer.safetensors")
    check_tensors(path / "model.safetensors", weights, model.state_dict())
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, tensor in opt_t.items():
            idx, k = key.split("::")
            state.setdefault(int(idx), {})[k] = tensor
        for key, v in meta["optimizer_scalars"].items():
            idx, k = key.split("::")
            state.setdefault(int(idx), {})[k] = v
    except ValueError as exc:
        raise ArtifactError(f"checkpoint {path}: malformed optimizer state key "
                            f"({describe(str(exc), raw=True)})") from exc
    groups = meta["param_groups"]
    mine = opt.state_dict()["param_groups"]  # same layout, parameters numbered 0..P-1
    if len(groups) != len(mine) or any(not isinstance(g, dict) or g.get("params") != m["params"]
                                       for g, m in zip(groups, mine, strict=True)):
        raise ArtifactError(f"checkpoint {path}: optimizer parameter groups do not match this model")
    params: dict[int, torch.Tensor] = {}
    for numbered, group in zip(mine, opt.param_groups, strict=True):
        params.update(zip(numbered["params"], group["params"], strict=True))
    for i, st in state.items():
        # per-parameter moments have the parameter's shape; Adam's step is a 0-d tensor
        if i not in params or any(torch.is_tensor(v) and v.dim() and v.shape != params[i].shape
                                  for v in st.values()):
            raise ArtifactError(f"checkpoint {path}: optimizer state {i} does not fit this model's parameters")
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})  # validates before it changes anything
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ArtifactError(f"checkpoint {path}: optimizer state does not load "
                            f"({describe(str(exc), raw=True)})") from exc
    model.load_state_dict(weights)  # names, shapes and dtypes checked above
    return meta


def checkpoint_path(ckpt_dir: str | Path, epoch: int) -> Path:
    """Directory of the checkpoint written at the end of 0-based ``epoch``."""
    return Path(ckpt_dir) / f"epoch-{epoch:04d}"


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Load only the model weights of checkpoint ``path`` (checked first; ArtifactError if unusable)."""
    weights = _read_tensors(path / "model.safetensors")
    check_tensors(path / "model.safetensors", weights, model.state_dict())
    model.load_state_dict(weights)


def clear_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Delete a run's checkpoints and unfinished temp directories, keeping any set-aside
    ``*.corrupt*`` ones (evidence); the directory goes too when nothing is kept. Returns the kept."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    kept = []
    for p in d.iterdir():
        if ".corrupt" in p.name:
            kept.append(p)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if kept:
        log.warning("%s keeps %d checkpoint(s) that failed to load, for inspection: %s", d, len(kept),
                    ", ".join(sorted(p.name for p in kept)))
    else:
        shutil.rmtree(d, ignore_errors=True)
    return kept


def set_aside(path: Path, reason: Exception) -> Path:
    """Rename a checkpoint that failed to load to ``<name>.corrupt`` (``.corrupt-N`` if taken)."""
    dest, n = path.with_name(path.name + ".corrupt"), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{n}")
    os.replace(path, dest)
    log.warning("checkpoint %s failed to load (%s); moved it to %s and falling back to the previous one",
                path, reason, dest.name)
    return dest


def resume(ckpt_dir: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
           fingerprint: str) -> dict[str, Any] | None:
    """Restore the newest checkpoint of this run that loads; None for a fresh start.

    Checkpoints that fail to load are set aside (newest first) until one loads. When the
    newest readable one belongs to a different run (other ``fingerprint``), its checkpoints
    are deleted (set-aside ones stay) and the run starts afresh.
    """
    for path in reversed(completed_checkpoints(ckpt_dir)):
        try:
            if read_state(path)["fingerprint"] != fingerprint:
                log.warning("%s holds checkpoints of a different run; starting afresh", ckpt_dir)
                clear_checkpoints(ckpt_dir)
                return None
            meta = load_checkpoint(path, model, opt)
        except ArtifactError as exc:
            set_aside(path, exc)
            continue
        log.info("resumed from %s (epoch %d done)", path, meta["epoch"] + 1)
        return meta
    return None
