"""Champion/challenger gate: may a candidate model go to canary?

The candidate and the current champion are scored on the same test rows. The candidate
passes only if it beats the champion's AUC by more than ``min_auc_gain`` **and** DeLong's
one-sided test (H1: AUC_candidate > AUC_champion) is significant at ``alpha``. With no
champion yet (the first model), it passes iff its AUC reaches ``floor_auc``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import ArrayLike

from genctr.errors import ConfigError
from genctr.evaluation.delong import DeLongResult, delong_test
from genctr.evaluation.metrics import evaluate

log = logging.getLogger(__name__)


@dataclass
class GateConfig:
    """Thresholds of the champion gate."""

    min_auc_gain: float = 0.001  # candidate AUC - champion AUC must exceed this (0.001 is material in CTR)
    alpha: float = 0.05  # significance level of DeLong's one-sided test
    floor_auc: float = 0.55  # first model (no champion): minimum AUC to pass

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_auc_gain < 1.0:
            raise ConfigError(f"gate.min_auc_gain must be in [0, 1), got {self.min_auc_gain}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"gate.alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 <= self.floor_auc <= 1.0:
            raise ConfigError(f"gate.floor_auc must be in [0, 1], got {self.floor_auc}")


@dataclass
class GateDecision:
    """Outcome of the gate: ``passed``, a human-readable ``reason``, and the evidence."""

    passed: bool
    reason: str
    candidate: dict[str, Any]  # metrics.evaluate() of the candidate
    champion: dict[str, Any] | None = None  # same for the champion; None for a first model
    delong: DeLongResult | None = None  # candidate (a) vs champion (b)
    config: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "candidate": dict(self.candidate),
            "champion": None if self.champion is None else dict(self.champion),
            "delong": None if self.delong is None else self.delong.to_dict(),
            "config": {"min_auc_gain": self.config.min_auc_gain, "alpha": self.config.alpha,
                       "floor_auc": self.config.floor_auc},
        }


def champion_gate(
    labels: ArrayLike,
    candidate_scores: ArrayLike,
    champion_scores: ArrayLike | None,
    users: ArrayLike | None,
    cfg: GateConfig | None = None,
    *,
    from_logits: bool = False,
) -> GateDecision:
    """Decide whether the candidate may replace the champion (scores are on the same rows)."""
    cfg = cfg or GateConfig()
    cand = evaluate(labels, candidate_scores, users, from_logits=from_logits)
    if champion_scores is None:
        passed = cand["auc"] >= cfg.floor_auc
        verdict = "reaches" if passed else "is below"
        reason = f"first model: candidate AUC {cand['auc']:.4f} {verdict} the floor {cfg.floor_auc:.4f}"
        log.info("gate %s: %s", "passed" if passed else "failed", reason)
        return GateDecision(passed, reason, cand, config=cfg)

    champ = evaluate(labels, champion_scores, users, from_logits=from_logits)
    test = delong_test(labels, candidate_scores, champion_scores)
    gain_ok = test.diff > cfg.min_auc_gain
    significant = test.p_one_sided < cfg.alpha
    passed = gain_ok and significant
    reason = (
        f"AUC {test.auc_a:.4f} vs champion {test.auc_b:.4f}: gain {test.diff:+.4f} "
        f"{'>' if gain_ok else '<='} margin {cfg.min_auc_gain:.4f}; DeLong one-sided "
        f"p={test.p_one_sided:.3g} {'<' if significant else '>='} alpha {cfg.alpha:g}"
    )
    log.info("gate %s: %s", "passed" if passed else "failed", reason)
    return GateDecision(passed, reason, cand, champ, test, cfg)


__all__ = ["GateConfig", "GateDecision", "champion_gate"]
