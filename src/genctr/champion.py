"""Candidate vs champion on the same test rows: the gate step of the training pipeline."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genctr.artifacts.files import FIX, VOCABS, check_vocab_fits, read_config, read_json_object, read_vocabulary
from genctr.artifacts.kinds import CTR_KINDS, KIND_CTR, KIND_DGENCTR_CTR
from genctr.artifacts.load import load_model, max_seq_len_of
from genctr.atomic import write_json
from genctr.config import from_dict
from genctr.errors import ArtifactError, describe
from genctr.evaluation.gate import GateConfig, champion_gate
from genctr.evaluation.plots import plot_roc, plot_training_curves, roc_points
from genctr.evaluation.report import write_gate_report
from genctr.registry import open_registry
from genctr.training.data import FeatureData
from genctr.training.remap import translate
from genctr.training.run import score

log = logging.getLogger(__name__)

# What `genctr evaluate` exits with when the gate rejects the candidate: distinct from 0 (passed) and
# from 2 (bad input, genctr.cli.errors), so a shell or CI step can tell "worse model" from "wrong flags".
REJECTED_EXIT = 3


def load_ctr_artifact(model_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """A CTR model artifact, fully checked before any scoring: config, finite weights that fit it,
    vocabularies that fit the weights (ArtifactError naming the bad file otherwise)."""
    kind = read_config(model_dir)["kind"]
    if kind not in CTR_KINDS:
        raise ArtifactError(f"{Path(model_dir) / 'config.json'} names a {describe(kind, raw=True)} model; "
                            f"the gate compares fine-tuned CTR models ({KIND_CTR} or {KIND_DGENCTR_CTR}, "
                            f"from `genctr train finetune`)")
    model = load_model(model_dir, device)
    sizes = {}  # vocabulary -> largest index + 1
    for name in VOCABS:
        _, idx = read_vocabulary(model_dir, name)
        sizes[name] = int(idx.max()) + 1 if len(idx) else 0
    check_vocab_fits(model_dir, sizes, model)
    return model


def test_scores(build: str | Path, model_dir: str | Path, device: str = "cpu") -> tuple[np.ndarray, FeatureData]:
    """Logits of ``model_dir`` on the build's test split, through the model's own vocabularies."""
    model = load_ctr_artifact(model_dir, device)
    data = FeatureData(str(build), max_seq_len_of(model_dir), device)
    return score(model, translate(data, model_dir), "test"), data


def training_history(model_dir: str | Path) -> list[dict[str, Any]]:
    """Per-epoch rows of ``metrics.json`` (empty when the artifact has none)."""
    path = Path(model_dir) / "metrics.json"
    if not path.exists():
        log.warning("%s has no metrics.json: the report shows no training curves", model_dir)
        return []
    history = read_json_object(path).get("history") or []
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise ArtifactError(f"{path}: 'history' must be a list of per-epoch objects, "
                            f"got {describe(history, raw=True)}; {FIX}")
    return history


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def evaluate_against_champion(build: str | Path, candidate: str | Path, registry_root: str, name: str,
                              gate: dict[str, Any] | GateConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the gate; write decision.json, report.html, roc.png (and training.png) into ``out_dir``."""
    cfg = gate if isinstance(gate, GateConfig) else from_dict(GateConfig, gate)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cand, data = test_scores(build, candidate)
    test = data.splits["test"]
    labels, users = test.label.cpu().numpy(), test.user_raw
    reg = open_registry(registry_root)
    champ_v = reg.champion(name)
    champ = None
    if champ_v is not None:
        with tempfile.TemporaryDirectory(prefix="genctr-champion-") as tmp:
            champ_dir = reg.download(name, champ_v, Path(tmp) / "model")
            champ, _ = test_scores(build, champ_dir)
    decision = champion_gate(labels, cand, champ, users, cfg, from_logits=True)
    result = decision.to_dict()
    result["champion_version"] = champ_v
    result["roc"] = {"candidate": roc_points(labels, _sigmoid(cand)),
                     "champion": None if champ is None else roc_points(labels, _sigmoid(champ))}
    curves = {"candidate": _sigmoid(cand)} | ({} if champ is None else {f"champion v{champ_v}": _sigmoid(champ)})
    images = [plot_roc(labels, curves, out / "roc.png", title="ROC on the test split")]
    history = training_history(candidate)
    if history:
        images.append(plot_training_curves(history, out / "training.png", title="candidate training"))
    write_gate_report(out / "report.html", result, images, title=f"Champion gate: {name}")
    write_json(out / "decision.json", result, default=float)
    log.info("gate %s: %s", "PASSED" if decision.passed else "REJECTED", decision.reason)
    return result
