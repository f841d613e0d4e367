"""The champion gate on real artifacts: a worse candidate is rejected, a better one passes."""
from __future__ import annotations

import dataclasses
import json

import torch

from genctr.artifacts.files import save_artifact
from genctr.artifacts.kinds import KIND_CTR
from genctr.models.config import ModelConfig
from genctr.registry import ModelRegistry
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.run import init_ctr, train_ctr, with_vocab
from genctr.workflow import evaluate_gate, register

GATE = {"min_auc_gain": 0.005, "alpha": 0.05, "floor_auc": 0.55}


def train_artifact(build, L, out, shuffle_labels: bool, seed: int = 0) -> None:
    data = FeatureData(str(build), L)
    if shuffle_labels:  # same rows, labels unrelated to features: a deliberately worse model
        s = data.splits["train"]
        g = torch.Generator().manual_seed(seed)
        s.label = s.label[torch.randperm(len(s), generator=g)]
    cfg = ModelConfig(backbone="dnn", max_seq_len=L)
    model = init_ctr(data, cfg, None, seed)
    history = train_ctr(data, model, TrainConfig(epochs=2, batch_size=512, lr=2e-3, seed=seed, progress=False))
    config = {"kind": KIND_CTR, "model": dataclasses.asdict(with_vocab(cfg, data))}
    save_artifact(out, model, config, build, {"history": history})


def test_gate_rejects_worse_and_passes_better(synthetic_build, tmp_path) -> None:
    build, L = synthetic_build["build"], synthetic_build["max_seq_len"]
    reg_root = str(tmp_path / "registry")
    train_artifact(build, L, tmp_path / "good", shuffle_labels=False)
    train_artifact(build, L, tmp_path / "bad", shuffle_labels=True)

    # first model: only the floor applies; the shuffled-label model must not pass it
    bad_first = evaluate_gate(build, tmp_path / "bad", reg_root, "ctr", GATE, tmp_path / "g0")
    assert not bad_first.summary["passed"] and bad_first.summary["champion"] is None
    first = evaluate_gate(build, tmp_path / "good", reg_root, "ctr", GATE, tmp_path / "g1")
    assert first.summary["passed"], first.summary["reason"]
    v1 = register(tmp_path / "good", reg_root, "ctr", {"gate": "g1"}, set_champion=True).summary["version"]

    # a worse challenger is rejected and the champion stays
    worse = evaluate_gate(build, tmp_path / "bad", reg_root, "ctr", GATE, tmp_path / "g2")
    assert not worse.summary["passed"]
    assert worse.summary["candidate"]["auc"] < worse.summary["champion"]["auc"]
    assert ModelRegistry(reg_root).champion("ctr") == int(v1)
    decision = json.loads((tmp_path / "g2" / "decision.json").read_text())
    assert decision["passed"] is False and len(decision["roc"]["champion"]["fpr"]) > 2
    html = (tmp_path / "g2" / "report.html").read_text()
    assert "Gate REJECTED" in html and "data:image/png;base64," in html

    # with the worse model as champion, the good one passes with a significant DeLong test
    reg = ModelRegistry(reg_root)
    v2 = reg.register(tmp_path / "bad", "ctr", {})
    reg.set_champion("ctr", v2)
    better = evaluate_gate(build, tmp_path / "good", reg_root, "ctr", GATE, tmp_path / "g3")
    assert better.summary["passed"], better.summary["reason"]
    assert better.summary["delong"]["p_one_sided"] < 0.05
