"""Evidently data-drift reports of what each arm scored and showed.

Two comparisons, one HTML report each:

``drift_arms.html``
    canary impressions (current) against champion impressions (reference). Both arms see the
    same traffic, so feature drift here points at logging or routing problems, and ``pctr`` drift
    is simply the new model predicting differently.
``drift_training.html`` (only with a ``reference`` frame)
    canary impressions against training-time data (e.g. training samples with ``category_id``
    and the candidate's predicted CTRs as ``pctr``): is the served traffic what the model was
    trained and validated on? Only columns present in both are compared.

Evidently (0.7 API) is pandas-only and slow on large frames, so each side is sampled to at most
``max_rows`` rows with a fixed seed. Column drift uses Evidently's default method per column type
and sample size; the per-column verdicts are read from the report's tests.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from genctr.atomic import atomic_path
from genctr.errors import DataValidationError
from genctr.monitoring.logs import ABLogs

log = logging.getLogger(__name__)

NUMERICAL = ["pctr", "bid", "position", "n_candidates"]  # n_candidates: of the impression's request
CATEGORICAL = ["category_id"]
MAX_ROWS = 20_000


def impression_frame(logs: ABLogs, arm: str) -> pd.DataFrame:
    """The drift columns of one arm's impressions, ``n_candidates`` joined from the request.

    Shape (n_impressions, 5). ``n_candidates`` is thereby weighted by impressions per request.
    """
    imp = logs.impressions.loc[logs.impressions["arm"] == arm, ["request_id", "pctr", "bid", "position",
                                                                 "category_id"]]
    cands = logs.requests[["request_id", "n_candidates"]].drop_duplicates("request_id")
    out = imp.merge(cands, on="request_id", how="left").drop(columns="request_id")
    out["n_candidates"] = out["n_candidates"].astype("float64")  # NaN if the request was not logged
    return out.astype({"pctr": "float64", "bid": "float64", "position": "float64", "category_id": "int64"})


def _conform_reference(reference: pd.DataFrame, shared: list[str]) -> pd.DataFrame:
    """The shared columns cast like the logged ones, so Evidently compares like with like."""
    try:
        return reference[shared].astype({c: "int64" if c in CATEGORICAL else "float64" for c in shared})
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"drift report: the training reference's columns {shared} do not cast to "
                                  f"the log's types: {exc}") from exc


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return df.sample(n=max_rows, random_state=seed) if len(df) > max_rows else df


def _run_report(current: pd.DataFrame, reference: pd.DataFrame) -> Any:
    """An Evidently snapshot of DataDriftPreset over the columns both frames share."""
    from evidently import DataDefinition, Dataset, Report  # heavy import, only when drift is asked for
    from evidently.presets import DataDriftPreset

    shared = [c for c in NUMERICAL + CATEGORICAL if c in current.columns and c in reference.columns]
    definition = DataDefinition(numerical_columns=[c for c in shared if c in NUMERICAL],
                                categorical_columns=[c for c in shared if c in CATEGORICAL])
    cur = Dataset.from_pandas(current[shared].reset_index(drop=True), data_definition=definition)
    ref = Dataset.from_pandas(reference[shared].reset_index(drop=True), data_definition=definition)
    # A constant column (e.g. one candidate count in a short window) makes the preset's
    # correlation overview divide by a zero standard deviation: numpy warns on stderr once per
    # pair, the drift scores are unaffected. Silence exactly that.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        return Report([DataDriftPreset(columns=shared)], include_tests=True).run(cur, ref)  # current first


def summarize(snapshot: Any) -> dict[str, Any]:
    """Drifted-column count/share and per-column score, method, threshold and verdict.

    Read from ``snapshot.dict()``: the ``DriftedColumnsCount`` metric (``{"count", "share"}``),
    one ``ValueDrift`` metric per column (the score) and one test per column (FAIL = drifted;
    the test knows whether the method's score is a p-value or a distance).
    """
    data = snapshot.dict()
    summary: dict[str, Any] = {"drifted_columns": None, "drift_share": None, "columns": {}}
    for metric in data["metrics"]:
        cfg = metric.get("config", {})
        kind = str(cfg.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            summary["drifted_columns"] = int(metric["value"]["count"])
            summary["drift_share"] = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            summary["columns"][cfg["column"]] = {"score": float(metric["value"]), "method": cfg.get("method"),
                                                 "threshold": cfg.get("threshold"), "drifted": None}
    for test in data["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith("ValueDrift") and params.get("column") in summary["columns"]:
            summary["columns"][params["column"]]["drifted"] = test["status"] == "FAIL"
    summary["drifted"] = sorted(c for c, v in summary["columns"].items() if v["drifted"])
    return summary


def _save_html(snapshot: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        snapshot.save_html(str(tmp))  # save_html treats a non-str argument as a file object


def _compare(current: pd.DataFrame, reference: pd.DataFrame, path: Path, max_rows: int, seed: int) -> dict[str, Any]:
    snapshot = _run_report(_sample(current, max_rows, seed), _sample(reference, max_rows, seed))
    _save_html(snapshot, path)
    summary = summarize(snapshot)
    log.info("drift report %s: %s of %d column(s) drifted %s", path, summary["drifted_columns"],
             len(summary["columns"]), summary["drifted"])
    return {"path": str(path), "rows_current": len(current), "rows_reference": len(reference), **summary}


def drift_report(logs: ABLogs, out_dir: str | Path, reference: pd.DataFrame | None = None, *,
                 max_rows: int = MAX_ROWS, seed: int = 0) -> dict[str, Any]:
    """Write ``drift_arms.html`` (and ``drift_training.html`` given ``reference``) to ``out_dir``.

    Returns ``{"arms": summary, "training": summary}`` (``training`` only with a reference); a
    summary is ``{"path", "rows_current", "rows_reference", "drifted_columns", "drift_share",
    "drifted", "columns": {name: {"score", "method", "threshold", "drifted"}}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    champion, canary = impression_frame(logs, "champion"), impression_frame(logs, "canary")
    for arm, frame in (("champion", champion), ("canary", canary)):
        if frame.empty:
            raise DataValidationError(f"drift report: the {arm} arm has no impressions to compare")
    result = {"arms": _compare(canary, champion, out / "drift_arms.html", max_rows, seed)}
    if reference is not None:
        shared = [c for c in NUMERICAL + CATEGORICAL if c in reference.columns]
        if not shared or reference.empty:
            raise DataValidationError("drift report: the training reference needs rows and at least one of "
                                      f"the columns {NUMERICAL + CATEGORICAL}; it has {list(reference.columns)}")
        result["training"] = _compare(canary, _conform_reference(reference, shared), out / "drift_training.html",
                                      max_rows, seed)
    return result


__all__ = ["drift_report", "impression_frame", "summarize"]
