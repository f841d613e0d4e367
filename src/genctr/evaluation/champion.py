"""Candidate vs champion on the same test rows: the gate step of the training pipeline."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genctr.config import from_dict
from genctr.evaluation.gate import GateConfig, champion_gate
from genctr.evaluation.plots import plot_roc, plot_training_curves, roc_points
from genctr.evaluation.report import write_gate_report
from genctr.registry import ModelRegistry
from genctr.training.data import FeatureData
from genctr.training.remap import translate
from genctr.training.run import load_model, max_seq_len_of, score

log = logging.getLogger(__name__)


def test_scores(build: str | Path, model_dir: str | Path, device: str = "cpu") -> tuple[np.ndarray, FeatureData]:
    """Logits of ``model_dir`` on the build's test split, through the model's own vocabularies."""
    data = FeatureData(str(build), max_seq_len_of(model_dir), device)
    return score(load_model(model_dir, device), translate(data, model_dir), "test"), data


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
    reg = ModelRegistry(registry_root)
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
    history = json.loads((Path(candidate) / "metrics.json").read_text()).get("history") or []
    if history:
        images.append(plot_training_curves(history, out / "training.png", title="candidate training"))
    write_gate_report(out / "report.html", result, images, title=f"Champion gate: {name}")
    tmp_json = out / ".decision.json.tmp"
    tmp_json.write_text(json.dumps(result, indent=2, default=float))
    os.replace(tmp_json, out / "decision.json")
    log.info("gate %s: %s", "PASSED" if decision.passed else "REJECTED", decision.reason)
    return result
