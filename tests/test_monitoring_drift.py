"""Evidently drift reports between arms and against a training reference, the click model's quality per
arm beside them, and the Evidently workspace they accumulate in, read back through Evidently's own API."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from genctr.errors import DataValidationError
from genctr.monitoring.drift import PROJECT, drift_report
from genctr.monitoring.logs import ABLogs, append, read_logs


def make_logs(log_dir: Path, *, canary_pctr_scale: float = 1.0, n_requests: int = 2_000, seed: int = 0,
              clicks: bool = False, canary_shuffled: bool = False) -> ABLogs:
    """Two arms over the same traffic (3 ads per request); the canary's pctr times ``canary_pctr_scale``.

    With ``clicks`` each impression is clicked with probability its unscaled pctr (the champion is
    calibrated; a scaled canary over-predicts by the scale); ``canary_shuffled`` permutes the canary's
    pctrs after the clicks are drawn (it ranks at random: ROC AUC ~0.5).
    """
    rng = np.random.default_rng(seed)
    canary = rng.random(n_requests) < 0.5
    requests = pd.DataFrame({
        "request_id": np.char.add("r", np.arange(n_requests).astype(str)),
        "ts": 1_700_000_000 + np.arange(n_requests), "user_id": rng.integers(0, 500, n_requests),
        "arm": np.where(canary, "canary", "champion"), "status": 200,
        "latency_ms": rng.gamma(4.0, 8.0, n_requests), "n_candidates": rng.integers(20, 60, n_requests),
        "randomisation": "user"})
    rows = np.repeat(np.arange(n_requests), 3)  # (I,)
    position = np.tile(np.arange(3), n_requests)
    bid = rng.gamma(2.0, 0.5, len(rows)) + 0.05
    scale = np.where(canary[rows], canary_pctr_scale, 1.0)
    impressions = pd.DataFrame({
        "request_id": requests["request_id"].to_numpy()[rows], "ts": requests["ts"].to_numpy()[rows],
        "user_id": requests["user_id"].to_numpy()[rows], "arm": requests["arm"].to_numpy()[rows],
        "item_id": rng.integers(0, 1_000, len(rows)) * 3 + position, "category_id": rng.integers(0, 20, len(rows)),
        "position": position, "bid": bid, "pctr": np.clip(rng.beta(2.0, 40.0, len(rows)) * scale, 0, 1),
        "cpc": bid * rng.uniform(0.3, 1.0, len(rows)), "randomisation": "user"})
    clicked = rng.random(len(rows)) < impressions["pctr"].to_numpy() / scale if clicks else np.zeros(len(rows), bool)
    if canary_shuffled:
        on = canary[rows]
        impressions.loc[on, "pctr"] = rng.permutation(impressions.loc[on, "pctr"].to_numpy())
    append(log_dir, "requests", requests)
    append(log_dir, "impressions", impressions)
    append(log_dir, "clicks", impressions.loc[clicked, ["request_id", "item_id", "ts"]])
    return read_logs(log_dir)


def test_shifted_canary_pctr_drifts(tmp_path: Path) -> None:
    out = drift_report(make_logs(tmp_path / "logs", canary_pctr_scale=1.6), tmp_path / "reports")
    arms = out["arms"]
    assert arms["drifted"] == ["pctr"], arms["columns"]
    assert arms["drifted_columns"] == 1 and arms["drift_share"] == pytest.approx(1 / 5)
    assert set(arms["columns"]) == {"pctr", "bid", "position", "n_candidates", "category_id"}
    html = Path(arms["path"]).read_text(encoding="utf-8")
    assert Path(arms["path"]).name == "drift_arms.html" and html.lstrip().startswith("<!DOCTYPE html>")
    assert "Value Drift for column pctr" in html and "category_id" in html
    assert "training" not in out and not list((tmp_path / "reports").glob(".*.tmp"))


def test_identical_arms_do_not_drift(tmp_path: Path) -> None:
    arms = drift_report(make_logs(tmp_path / "logs"), tmp_path / "reports")["arms"]
    assert arms["drifted"] == [] and arms["drifted_columns"] == 0, arms["columns"]
    assert all(c["drifted"] is False for c in arms["columns"].values())


def test_training_reference_report(tmp_path: Path) -> None:
    logs = make_logs(tmp_path / "logs", n_requests=1_500)
    rng = np.random.default_rng(1)
    # Training-time frame: only the columns it shares with the log are compared; its predicted CTRs
    # are twice the served ones, its categories the same.
    reference = pd.DataFrame({"pctr": rng.beta(2.0, 40.0, 5_000) * 2, "category_id": rng.integers(0, 20, 5_000),
                              "label": rng.integers(0, 2, 5_000)})
    out = drift_report(logs, tmp_path / "reports", reference=reference, max_rows=2_000)
    training = out["training"]
    assert Path(training["path"]).name == "drift_training.html" and Path(training["path"]).exists()
    assert set(training["columns"]) == {"pctr", "category_id"} and training["drifted"] == ["pctr"]
    assert training["rows_reference"] == 5_000
    with pytest.raises(DataValidationError, match="reference"):
        drift_report(logs, tmp_path / "reports", reference=pd.DataFrame({"label": [0, 1]}))


def test_a_constant_column_reports_without_numpy_warnings(tmp_path: Path) -> None:
    # one candidate count for every request: a zero standard deviation in the correlations
    logs = make_logs(tmp_path / "logs", n_requests=600)
    requests = logs.requests.assign(n_candidates=20)
    logs = ABLogs(requests=requests, impressions=logs.impressions, clicks=logs.clicks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arms = drift_report(logs, tmp_path / "reports")["arms"]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert "n_candidates" in arms["columns"] and arms["columns"]["n_candidates"]["drifted"] is False


def _arm(logs: ABLogs, arm: str) -> pd.DataFrame:
    return logs.impressions[logs.impressions["arm"] == arm]


def test_two_turns_make_one_project_with_two_snapshots_and_quality_per_arm(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    turns = []
    for turn in range(2):
        logs = make_logs(tmp_path / f"logs{turn}", canary_pctr_scale=2.0, clicks=True, canary_shuffled=True,
                         n_requests=4_000, seed=turn)
        turns.append((logs, drift_report(logs, tmp_path / "canary")["arms"]))
    workspace = Workspace(str(tmp_path / "canary" / "evidently"))  # what `evidently ui --workspace` opens
    (project,) = workspace.list_projects()
    assert project.name == PROJECT
    stored = [t["workspace"] for _, t in turns]
    assert {s["project_id"] for s in stored} == {str(project.id)}
    assert sorted(str(i) for i in workspace.list_runs(project.id)) == sorted(s["snapshot_id"] for s in stored)
    for logs, arms in turns:
        quality = arms["quality"]
        assert arms["quality_note"] is None and set(quality) == {"canary", "champion"}
        for arm in ("canary", "champion"):  # each arm's numbers are that arm's, not the other's
            imp = _arm(logs, arm)
            assert quality[arm]["roc_auc"] == pytest.approx(roc_auc_score(imp["clicked"], imp["pctr"]))
            assert quality[arm]["ctr"] == pytest.approx(imp["clicked"].mean())
        assert quality["canary"]["roc_auc"] < 0.56 < quality["champion"]["roc_auc"]  # shuffled vs real ranking
        # ~300 clicks per arm: the CTR's standard error is ~6 %
        assert quality["canary"]["calibration"] == pytest.approx(2.0, rel=0.25)  # over-predicts by its scale
        assert quality["champion"]["calibration"] == pytest.approx(1.0, rel=0.25)
        assert arms["drifted"] == ["pctr"]  # the drift is still there, in the same snapshot
        snapshot = workspace.get_run(project.id, arms["workspace"]["snapshot_id"])
        values = {r.metric_value_location.metric.params["type"].rsplit(":", 1)[-1]: r
                  for r in snapshot.metric_results.values()}
        assert values["RocAuc"].value == pytest.approx(quality["canary"]["roc_auc"])  # current = canary
        assert "DriftedColumnsCount" in values and "arms" in snapshot.tags


def test_without_clicks_the_snapshot_holds_drift_only(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    arms = drift_report(make_logs(tmp_path / "logs", n_requests=600), tmp_path / "reports")["arms"]
    assert arms["quality"] is None and "no clicks" in arms["quality_note"]
    workspace = Workspace(arms["workspace"]["path"])
    snapshot = workspace.get_run(arms["workspace"]["project_id"], arms["workspace"]["snapshot_id"])
    kinds = {r.metric_value_location.metric.params["type"].rsplit(":", 1)[-1] for r in snapshot.metric_results.values()}
    assert "DriftedColumnsCount" in kinds and not kinds & {"RocAuc", "LogLoss"}


def test_reference_results_come_from_evidentlys_public_snapshot_api() -> None:
    # quality_summary reads the reference (champion) values through Snapshot.context; pin that API
    import inspect

    from evidently.core.report import Context, Snapshot

    assert isinstance(inspect.getattr_static(Snapshot, "context"), property)
    assert list(inspect.signature(Context.get_reference_metric_result).parameters) == ["self", "metric_id"]
