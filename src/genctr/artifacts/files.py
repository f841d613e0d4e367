"""Model artifact directories: the unit the registry stores and KServe's storageUri names.

    model.safetensors   weights (never pickle)
    config.json         {"format": 1, "genctr_version", "kind", "model": {...}, "feature_service", ...}
    vocab/              the feature build's vocabularies (raw id -> index), Parquet
    items/              item -> category table of the build (for scoring unseen candidates)
    metrics.json        evaluation metrics and per-epoch history

Loading treats the directory as untrusted input: every way it can be broken (missing or
truncated files, a config that is not the expected JSON object, tensors that do not fit
the model the config describes, NaN/inf weights) is an :class:`ArtifactError` naming the
file and what to do about it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import SafetensorError

from genctr import __version__
from genctr.atomic import publish
from genctr.errors import ArtifactError, describe
from genctr.features.layout import FIRST_ID, BuildLayout

if TYPE_CHECKING:  # torch is imported where tensors are read or written: the registry and the deployers
    import torch  # use this module's file names without it

FORMAT = 1
REQUIRED_FILES = ("model.safetensors", "config.json")
FIX = "re-run `genctr train finetune` (or pretrain) to write it again, or download it again from the registry"
VOCABS = ("user", "item", "category")
TABLES = {"user": "user", "item": "item", "category": "cate"}  # vocabulary -> the model's id table


def save_artifact(out_dir: str | Path, model: torch.nn.Module, config: dict[str, Any],
                  build_dir: str | Path | None, metrics: dict[str, Any]) -> Path:
    """Write the artifact under a temp name beside ``out_dir``, then rename it into place."""
    from safetensors.torch import save_file

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
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; ArtifactError naming ``path`` otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is unreadable ({describe(str(exc), raw=True)}); {FIX}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                            f"{FIX}") from exc
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} must hold a JSON object, got {type(value).__name__}; {FIX}")
    return value


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a model directory, checked: a JSON object of this format with a kind and model."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ArtifactError(f"{d} is not a model artifact: the directory is missing "
                            f"(a model directory holds {list(REQUIRED_FILES)}); check the path")
    missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
    if missing:
        raise ArtifactError(f"{d} is not a model artifact: missing {missing} (or not plain files); {FIX}")
    path = d / "config.json"
    cfg = read_json_object(path)
    if cfg.get("format") != FORMAT:
        raise ArtifactError(f"{path}: artifact format {describe(cfg.get('format'), raw=True)} is not supported "
                            f"(expected {FORMAT}); {FIX} with this genctr version")
    if not isinstance(cfg.get("kind"), str):
        raise ArtifactError(f"{path}: 'kind' must be a model kind string, "
                            f"got {describe(cfg.get('kind'), raw=True)}; {FIX}")
    if not isinstance(cfg.get("model"), dict):
        raise ArtifactError(f"{path}: 'model' must be an object of model options, got "
                            f"{describe(cfg.get('model'), raw=True)}; {FIX}")
    return cfg


def load_weights(model_dir: str | Path, device: str | torch.device = "cpu",
                 expected: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of ``model.safetensors``, all finite; with ``expected`` (a state dict, e.g. of a
    meta-device model) the names, shapes and dtypes must match it exactly."""
    import torch
    from safetensors.torch import load_file

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing or not a plain file; {FIX}")
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file "
                            f"({describe(str(exc), raw=True)}); {FIX}") from exc
    if expected is not None:
        check_tensors(path, weights, expected)
    for name, t in weights.items():
        # one vectorised reduction per tensor; integer tensors cannot hold NaN/inf
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"{path}: tensor {describe(name, raw=True)} holds NaN or infinite values, "
                                f"so every score would be meaningless; the run that wrote it diverged: "
                                f"retrain (lower lr, grad_clip) or use the previous version")
    return weights


def check_tensors(path: Path, got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """ArtifactError unless ``got`` has exactly ``expected``'s tensor names, shapes and dtypes."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path} does not match its config.json: missing tensors "
                            f"{describe(missing, raw=True)}, unexpected tensors {describe(extra, raw=True)}; "
                            f"the weights and config come from different models: {FIX}")
    for name, want in expected.items():
        have = got[name]
        if have.shape != want.shape or have.dtype != want.dtype:
            raise ArtifactError(f"{path}: tensor {describe(name, raw=True)} is {have.dtype} {tuple(have.shape)} but "
                                f"config.json describes {want.dtype} {tuple(want.shape)} (vocabulary or "
                                f"layer sizes differ); {FIX}")


def read_vocabulary(model_dir: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``vocab/<name>`` as (raw_id [V] int64, idx [V] int64), checked: readable Parquet, integer
    columns without nulls, each raw id once, no reserved (PAD/OOV) index."""
    path = Path(model_dir) / "vocab" / name
    if not path.exists():
        raise ArtifactError(f"{model_dir} has no vocabulary {name!r} (vocab/{name}); "
                            f"was it written by genctr.training.run.finetune? {FIX}")
    try:
        table = pq.read_table(path, columns=["raw_id", "idx"])
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path} is not a readable vocabulary (Parquet with integer columns raw_id, idx): "
                            f"{describe(str(exc), raw=True)}; {FIX}") from exc
    for col in ("raw_id", "idx"):
        column = table.column(col)
        if not pa.types.is_integer(column.type) or column.null_count:
            raise ArtifactError(f"{path}: column {col!r} must be integers without nulls, got {column.type} "
                                f"with {column.null_count} null(s); {FIX}")
    raw = table.column("raw_id").to_numpy().astype(np.int64)
    idx = table.column("idx").to_numpy().astype(np.int64)
    if len(np.unique(raw)) != len(raw):
        raise ArtifactError(f"{path} maps one raw id to several indices; {FIX}")
    if len(idx) and idx.min() < FIRST_ID:
        raise ArtifactError(f"{path} uses reserved indices (< {FIRST_ID}: padding and OOV); {FIX}")
    return raw, idx


def embedding_tables(model: torch.nn.Module) -> dict[str, torch.nn.Embedding]:
    """The model's id tables by field name (``...tables.<field>``), for a vocabulary size check."""
    import torch

    return {name.rsplit(".", 1)[-1]: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Embedding) and ".tables." in f".{name}"}


def check_vocab_fits(model_dir: str | Path, sizes: dict[str, int], model: torch.nn.Module) -> None:
    """ArtifactError unless every vocabulary index has a row in the model's matching id table.

    ``sizes``: vocabulary name -> largest index + 1. An index past the table would otherwise
    fail inside the forward pass of the first request (or the first evaluation batch).
    """
    rows = {k: m.num_embeddings for k, m in embedding_tables(model).items()}
    for name, table in TABLES.items():
        if name in sizes and table in rows and sizes[name] > rows[table]:
            raise ArtifactError(f"{model_dir}: vocabulary {name!r} (vocab/{name}) reaches index {sizes[name] - 1} "
                                f"but the {table} table in model.safetensors has {rows[table]} rows; the "
                                f"vocabulary and weights come from different builds: {FIX}")
