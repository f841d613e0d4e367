"""Metrics against sklearn / brute force, DeLong against the O(m n) definition, ROC points, plots."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import log_loss, roc_auc_score

from genctr.errors import ConfigError, DataValidationError
from genctr.evaluation.delong import delong_test
from genctr.evaluation.metrics import auc, evaluate, gauc, logloss, per_user_auc
from genctr.evaluation.plots import plot_roc, plot_training_curves, roc_points


def _data(n: int, seed: int, signal: float = 1.0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int8)
    s = 1.0 / (1.0 + np.exp(-(signal * y + rng.normal(size=n) - 1.0)))
    if ties:
        s = np.round(s, 1)  # many exact ties
    return y, s


def _correlated_pair(n: int, seed: int, noise_b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two models sharing a latent signal; b adds noise_b more noise (0 = same true AUC)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int8)
    latent = 0.8 * y + rng.normal(size=n)
    a = latent + 0.7 * rng.normal(size=n)
    b = latent + math.sqrt(0.49 + noise_b**2) * rng.normal(size=n)
    return y, a, b


def _delong_brute(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """DeLong et al. (1988) straight from the definition: O(m n) pairwise kernels."""
    comps = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (m, n)
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comps
    m, n = v10a.size, v01a.size
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    cov = s10 / m + s01 / n
    return float(auc_a), float(auc_b), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


# ---------------------------------------------------------------- AUC / LogLoss / gAUC
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_logloss_match_sklearn(ties: bool) -> None:
    y, s = _data(3000, seed=1, ties=ties)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert logloss(y, s) == pytest.approx(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)), rel=1e-9)


def test_logloss_from_logits_is_stable_and_matches_probabilities() -> None:
    y, s = _data(1000, seed=2)
    z = np.log(s / (1 - s))
    assert logloss(y, z, from_logits=True) == pytest.approx(logloss(y, s), rel=1e-6)
    big = logloss(np.array([1, 0]), np.array([-800.0, 800.0]), from_logits=True)
    assert big == pytest.approx(800.0)  # no overflow, no clipping
    assert logloss(np.array([1, 0]), np.array([0.0, 1.0])) == pytest.approx(-math.log(1e-7))


def test_metric_inputs_are_validated() -> None:
    with pytest.raises(DataValidationError, match="one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataValidationError, match="0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(DataValidationError, match="same length"):
        auc([0, 1], [0.1])
    with pytest.raises(DataValidationError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataValidationError, match="from_logits"):
        logloss([0, 1], [-1.0, 2.0])


@pytest.mark.parametrize("ties", [False, True])
def test_gauc_matches_per_user_loop(ties: bool) -> None:
    rng = np.random.default_rng(3)
    y, s = _data(4000, seed=3, ties=ties)
    users = rng.choice(np.array([f"u{i}" for i in range(150)]), size=y.size)  # any hashable dtype
    num = den = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():  # users with one class only are skipped
            num += roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert gauc(y, s, users) == pytest.approx(num / den, abs=1e-12)
    auc_u, w = per_user_auc(y, s, users)
    assert w.sum() == den and auc_u.min() >= 0 and auc_u.max() <= 1


def test_gauc_without_two_class_users_is_nan_and_evaluate_reports_coverage() -> None:
    y = np.array([1, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    users = np.array([1, 1, 2, 2, 3, 3])  # only user 1 has both classes
    assert math.isnan(gauc(y, s, [1, 2, 3, 4, 5, 6]))
    out = evaluate(y, s, users)
    assert out["gauc"] == 1.0 and out["gauc_users"] == 1 and out["gauc_coverage"] == pytest.approx(2 / 6)
    assert out["auc"] == 1.0 and out["rows"] == 6 and out["click_rate"] == 0.5
    assert math.isnan(evaluate(y, s)["gauc"])


# ---------------------------------------------------------------- DeLong
@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False)])
def test_delong_matches_brute_force(seed: int, ties: bool) -> None:
    y, a, b = _correlated_pair(300, seed, noise_b=0.5)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    res = delong_test(y, a, b)
    auc_a, auc_b, var = _delong_brute(y, a, b)
    assert res.auc_a == pytest.approx(auc_a, abs=1e-12) and res.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert res.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    # scipy: AUC is the Mann-Whitney U statistic over m n pairs.
    u = mannwhitneyu(a[y == 1], a[y == 0]).statistic
    assert res.auc_a == pytest.approx(u / (y.sum() * (y.size - y.sum())), abs=1e-12)
    assert res.var_diff == pytest.approx(var, rel=1e-9)
    z = (auc_a - auc_b) / math.sqrt(var)
    assert res.z == pytest.approx(z, rel=1e-9)
    assert res.p_one_sided == pytest.approx(norm.sf(z), rel=1e-9)
    assert res.p_two_sided == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_delong_detects_a_real_difference_in_the_right_direction() -> None:
    y, a, b = _correlated_pair(3000, seed=4, noise_b=1.0)
    res = delong_test(y, a, b)
    assert res.diff > 0 and res.p_one_sided < 1e-3 and res.p_two_sided < 2e-3
    flipped = delong_test(y, b, a)
    assert flipped.z == pytest.approx(-res.z) and flipped.p_one_sided > 0.999


def test_delong_rejects_a_null_at_about_the_nominal_rate() -> None:
    alpha, sims = 0.05, 200
    rejections = sum(delong_test(*_correlated_pair(200, seed, noise_b=0.0)).p_two_sided < alpha
                     for seed in range(sims))
    assert 0.01 <= rejections / sims <= 0.10  # nominal 0.05, binomial sd ≈ 0.015


def test_delong_identical_models_and_too_few_rows() -> None:
    y, a, _ = _correlated_pair(100, seed=5, noise_b=0.0)
    res = delong_test(y, a, a)
    assert res.diff == 0 and res.z == 0 and res.p_two_sided == 1.0 and res.p_one_sided == 0.5
    with pytest.raises(DataValidationError, match="at least 2"):
        delong_test([1, 0, 0], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3])


# ---------------------------------------------------------------- ROC points and plots
def test_roc_points_are_thinned_finite_lists() -> None:
    y, s = _data(5000, seed=6)
    pts = roc_points(y, s, max_points=50)
    assert set(pts) == {"fpr", "tpr", "thresholds"}
    assert all(isinstance(v, list) and 2 <= len(v) <= 50 for v in pts.values())
    assert len({len(v) for v in pts.values()}) == 1
    assert all(math.isfinite(t) for t in pts["thresholds"]) and pts["thresholds"][0] > s.max()
    assert (pts["fpr"][0], pts["tpr"][0]) == (0.0, 0.0) and (pts["fpr"][-1], pts["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(pts["fpr"]) >= 0) and np.all(np.diff(pts["thresholds"]) <= 0)
    assert np.trapezoid(pts["tpr"], pts["fpr"]) == pytest.approx(roc_auc_score(y, s), abs=0.01)
    with pytest.raises(ConfigError):
        roc_points(y, s, max_points=1)


def test_plots_write_pngs(tmp_path) -> None:
    y, a, b = _correlated_pair(500, seed=7, noise_b=1.0)
    roc = plot_roc(y, {"candidate": a, "champion": b}, tmp_path / "roc.png")
    curves = plot_training_curves(
        [{"train_loss": 0.6, "valid_loss": 0.62, "valid_auc": 0.70}, {"train_loss": 0.5, "valid_auc": 0.74}],
        tmp_path / "sub" / "curves.png",
    )
    for p in (roc, curves):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_training_curves({"valid_auc": [0.7, 0.72]}, tmp_path / "auc_only.png")


def test_a_training_process_does_not_import_scikit_learn() -> None:
    """AUC is numpy's own here: every training process (pipeline steps, ``genctr train``) would
    otherwise pay scikit-learn's ~1.5 s import for one number."""
    import subprocess
    import sys

    code = "import sys, genctr.training.run; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
