"""Champion gate: better candidate passes, worse or insignificant one fails, first-model floor."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genctr.config import from_dict
from genctr.errors import ConfigError
from genctr.evaluation.gate import GateConfig, champion_gate


def _scores(n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels, users and three models: strong, weak (extra noise) and strong plus a hair of noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int8)
    latent = 1.0 * y + rng.normal(size=n)
    return {
        "y": y,
        "users": rng.integers(0, 200, size=n),
        "strong": latent,
        "weak": latent + 1.5 * rng.normal(size=n),
        "twin": latent + 0.01 * rng.normal(size=n),
    }


def test_better_candidate_passes() -> None:
    d = _scores()
    dec = champion_gate(d["y"], d["strong"], d["weak"], d["users"], GateConfig(), from_logits=True)
    assert dec.passed, dec.reason
    assert dec.delong is not None and dec.delong.diff > 0.001 and dec.delong.p_one_sided < 0.05
    assert dec.candidate["auc"] > dec.champion["auc"]
    json.dumps(dec.to_dict())  # ready for a KFP Metrics / JSON artifact


def test_worse_candidate_is_rejected() -> None:
    d = _scores()
    dec = champion_gate(d["y"], d["weak"], d["strong"], d["users"], GateConfig(), from_logits=True)
    assert not dec.passed and "<= margin" in dec.reason


def test_gain_below_margin_or_not_significant_is_rejected() -> None:
    d = _scores()
    twin = champion_gate(d["y"], d["strong"], d["twin"], d["users"], GateConfig(min_auc_gain=0.001),
                         from_logits=True)
    assert not twin.passed  # near-identical models: gain far below the margin
    strict = champion_gate(d["y"], d["strong"], d["weak"], d["users"], GateConfig(min_auc_gain=0.5),
                           from_logits=True)
    assert not strict.passed and strict.delong.p_one_sided < 0.05
    # Two equally good models on 80 rows: the candidate wins by chance (+0.014), not significantly.
    rng = np.random.default_rng(0)
    y = (rng.random(80) < 0.4).astype(np.int8)
    latent = y + rng.normal(size=80)
    a, b = latent + 0.5 * rng.normal(size=80), latent + 0.5 * rng.normal(size=80)
    lucky = champion_gate(y, a, b, None, GateConfig(min_auc_gain=0.0), from_logits=True)
    assert lucky.delong.diff > 0 and not lucky.passed
    assert "> margin" in lucky.reason and ">= alpha" in lucky.reason


def test_first_model_uses_the_floor() -> None:
    d = _scores()
    ok = champion_gate(d["y"], d["strong"], None, d["users"], GateConfig(floor_auc=0.6), from_logits=True)
    assert ok.passed and ok.champion is None and ok.delong is None and "first model" in ok.reason
    rng = np.random.default_rng(1)
    bad = champion_gate(d["y"], rng.random(d["y"].size), None, d["users"], GateConfig(floor_auc=0.6))
    assert not bad.passed and "below the floor" in bad.reason


def test_gate_config_is_validated() -> None:
    assert from_dict(GateConfig, {"alpha": 0.01}).alpha == 0.01
    for bad in ({"alpha": 0.0}, {"min_auc_gain": -0.1}, {"floor_auc": 1.5}, {"margin": 0.1}):
        with pytest.raises(ConfigError):
            from_dict(GateConfig, bad)
