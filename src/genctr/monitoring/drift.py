"""Evidently data-drift reports of what each arm scored and showed, and how well it predicted clicks.

Two comparisons, one HTML report each:

``drift_arms.html``
    canary impressions (current) against champion impressions (reference). Both arms see the
    same traffic, so feature drift here points at logging or routing problems, and ``pctr`` drift
    is simply the new model predicting differently. When each arm has clicked and unclicked
    impressions, the same report holds the click model's quality per arm: ROC AUC and LogLoss of
    ``pctr`` against ``clicked``, mean ``pctr`` against the CTR (their ratio is the calibration: 1
    is calibrated) — current is the canary, reference the champion.
``drift_training.html`` (only with a ``reference`` frame)
    canary impressions against training-time data (e.g. training samples with ``category_id``
    and the candidate's predicted CTRs as ``pctr``): is the served traffic what the model was
    trained and validated on? Only columns present in both are compared.

Every report is also added as a snapshot to an Evidently workspace (``<out_dir>/evidently`` unless
``workspace`` says where), in one project (``project``), tagged ``arms`` or ``training``: run
after run (an hourly canary writes into the same ``out_dir``) the drift and quality history is
browsable with ``evidently ui --workspace <dir>``. The workspace is Evidently's own file store,
written by Evidently.

Evidently (0.7 API) is pandas-only and slow on large frames, so each side is sampled to at most
``max_rows`` rows with a fixed seed. Column drift uses Evidently's default method per column type
and sample size; the per-column verdicts are read from the report's tests.
"""
from __future__ import annotations

import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from genctr.atomic import atomic_path
from genctr.errors import DataValidationError
from genctr.monitoring.logs import ABLogs

log = logging.getLogger(__name__)

NUMERICAL = ["pctr", "bid", "position", "n_candidates"]  # n_candidates: of the impression's request
CATEGORICAL = ["category_id"]
LABEL = "clicked"  # the click model's target; pctr its predicted probability
MAX_ROWS = 20_000
PROJECT = "genctr canary"  # the Evidently project the reports go to
WORKSPACE_DIR = "evidently"  # default workspace, under the report directory


def impression_frame(logs: ABLogs, arm: str) -> pd.DataFrame:
    """The drift columns of one arm's impressions, ``n_candidates`` joined from the request, and
    ``clicked`` when the logs credit clicks.

    Shape (n_impressions, 5 or 6). ``n_candidates`` is thereby weighted by impressions per request.
    """
    columns = ["request_id", "pctr", "bid", "position", "category_id"]
    if LABEL in logs.impressions.columns:
        columns.append(LABEL)
    imp = logs.impressions.loc[logs.impressions["arm"] == arm, columns]
    cands = logs.requests[["request_id", "n_candidates"]].drop_duplicates("request_id")
    out = imp.merge(cands, on="request_id", how="left").drop(columns="request_id")
    out["n_candidates"] = out["n_candidates"].astype("float64")  # NaN if the request was not logged
    types = {"pctr": "float64", "bid": "float64", "position": "float64", "category_id": "int64"}
    return out.astype(types | ({LABEL: "int64"} if LABEL in out.columns else {}))


def _conform_reference(reference: pd.DataFrame, shared: list[str]) -> pd.DataFrame:
    """The shared columns cast like the logged ones, so Evidently compares like with like."""
    try:
        return reference[shared].astype({c: "int64" if c in CATEGORICAL else "float64" for c in shared})
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"drift report: the training reference's columns {shared} do not cast to "
                                  f"the log's types: {exc}") from exc


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return df.sample(n=max_rows, random_state=seed) if len(df) > max_rows else df


def quality_note(current: pd.DataFrame, reference: pd.DataFrame) -> str | None:
    """Why the click model's quality cannot be measured on these frames (None: it can)."""
    for side, frame in (("current", current), ("reference", reference)):
        if LABEL not in frame.columns or "pctr" not in frame.columns:
            return f"the {side} impressions carry no {LABEL} label"
        clicks = int(frame[LABEL].sum())
        if clicks == 0 or clicks == len(frame):
            return f"the {side} impressions have {'no' if clicks == 0 else 'only'} clicks: ROC AUC needs both"
    return None


def _run_report(current: pd.DataFrame, reference: pd.DataFrame, *, quality: bool, tag: str) -> Any:
    """An Evidently snapshot: DataDriftPreset over the columns both frames share, and with
    ``quality`` the click model's ROC AUC, LogLoss, mean pctr and CTR."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report  # heavy: only when asked for
    from evidently.metrics import LogLoss, MeanValue, RocAuc
    from evidently.presets import DataDriftPreset
    from sklearn.exceptions import UndefinedMetricWarning

    shared = [c for c in NUMERICAL + CATEGORICAL if c in current.columns and c in reference.columns]
    label = [LABEL] if quality else []
    definition = DataDefinition(numerical_columns=[c for c in shared if c in NUMERICAL] + label,
                                categorical_columns=[c for c in shared if c in CATEGORICAL],
                                classification=[BinaryClassification(target=LABEL, prediction_probas="pctr")]
                                if quality else None)
    cur = Dataset.from_pandas(current[shared + label].reset_index(drop=True), data_definition=definition)
    ref = Dataset.from_pandas(reference[shared + label].reset_index(drop=True), data_definition=definition)
    metrics: list[Any] = [DataDriftPreset(columns=shared)]
    if quality:
        metrics += [RocAuc(), LogLoss(), MeanValue(column="pctr"), MeanValue(column=LABEL)]
    # A constant column (e.g. one candidate count in a short window) makes the preset's
    # correlation overview divide by a zero standard deviation: numpy warns on stderr once per
    # pair, the drift scores are unaffected. The classification metrics also compute precision
    # at a 0.5 threshold, which no CTR model reaches: sklearn warns, the AUC is unaffected.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
        report = Report(metrics, include_tests=True, tags=[tag])
        return report.run(cur, ref)  # current first


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


def quality_summary(snapshot: Any, current: str, reference: str) -> dict[str, dict[str, float]]:
    """``{arm: {"roc_auc", "log_loss", "mean_pctr", "ctr", "calibration"}}`` of a report with the
    quality metrics; ``current`` / ``reference`` name the arms of its two datasets.

    The current values are the snapshot's own (``snapshot.dict()``, what a workspace stores); the
    reference values come from the run's context (``snapshot.context.get_reference_metric_result``),
    as Evidently's report widgets show them.
    """
    names = {"RocAuc": "roc_auc", "LogLoss": "log_loss"}
    out: dict[str, dict[str, float]] = {current: {}, reference: {}}
    for metric in snapshot.dict()["metrics"]:
        cfg = metric.get("config", {})
        kind = str(cfg.get("type", "")).rsplit(":", 1)[-1]
        if kind == "MeanValue":
            key = {"pctr": "mean_pctr", LABEL: "ctr"}.get(cfg.get("column", ""))
        else:
            key = names.get(kind)
        if key is None:  # a drift metric
            continue
        out[current][key] = float(metric["value"])
        out[reference][key] = float(snapshot.context.get_reference_metric_result(metric["id"]).value)
    for arm in out.values():  # mean predicted CTR over observed CTR: 1 is calibrated, > 1 over-predicts
        arm["calibration"] = arm["mean_pctr"] / arm["ctr"]
    return out


def _save_html(snapshot: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        snapshot.save_html(str(tmp))  # save_html treats a non-str argument as a file object


class _Workspace:
    """The Evidently workspace and project the reports of one call go to (opened once, on first use)."""

    def __init__(self, path: Path, project: str) -> None:
        self.path, self.project_name = path, project
        self._ws: Any = None
        self._project: Any = None

    def add(self, snapshot: Any, name: str) -> dict[str, str]:
        with warnings.catch_warnings():  # its UI server's web framework warns about its own deprecations on import
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="litestar")
            from evidently.ui.workspace import Workspace

        if self._ws is None:
            self._ws = Workspace.create(str(self.path))  # opens an existing workspace too
            found = [p for p in self._ws.search_project(self.project_name) if p.name == self.project_name]
            self._project = found[0] if found else self._ws.create_project(
                self.project_name, description="genctr canary: canary vs champion impressions (drift, click model "
                                               "quality) and vs training data, one snapshot per analysis")
        ref = self._ws.add_run(self._project.id, snapshot, name=name)
        return {"path": str(self.path), "project_id": str(self._project.id), "snapshot_id": str(ref.id)}


def _compare(current: pd.DataFrame, reference: pd.DataFrame, path: Path, max_rows: int, seed: int,
             workspace: _Workspace, tag: str, arms: tuple[str, str] | None = None) -> dict[str, Any]:
    cur, ref = _sample(current, max_rows, seed), _sample(reference, max_rows, seed)
    note = quality_note(cur, ref) if arms else "only the arms' impressions carry clicks"
    snapshot = _run_report(cur, ref, quality=note is None, tag=tag)
    _save_html(snapshot, path)
    summary = summarize(snapshot)
    quality = quality_summary(snapshot, *arms) if arms and note is None else None
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    stored = workspace.add(snapshot, f"{tag} {stamp}")
    log.info("drift report %s: %s of %d column(s) drifted %s; click model quality %s; Evidently snapshot %s",
             path, summary["drifted_columns"], len(summary["columns"]), summary["drifted"],
             quality if quality else f"not measured ({note})", stored["snapshot_id"])
    return {"path": str(path), "rows_current": len(current), "rows_reference": len(reference), **summary,
            "quality": quality, "quality_note": note, "workspace": stored}


def drift_report(logs: ABLogs, out_dir: str | Path, reference: pd.DataFrame | None = None, *,
                 max_rows: int = MAX_ROWS, seed: int = 0, workspace: str | Path | None = None,
                 project: str = PROJECT) -> dict[str, Any]:
    """Write ``drift_arms.html`` (and ``drift_training.html`` given ``reference``) to ``out_dir``, and
    add both to the Evidently workspace ``workspace`` (default ``<out_dir>/evidently``), project ``project``.

    Returns ``{"arms": summary, "training": summary}`` (``training`` only with a reference); a
    summary is ``{"path", "rows_current", "rows_reference", "drifted_columns", "drift_share",
    "drifted", "columns": {name: {"score", "method", "threshold", "drifted"}}, "quality",
    "quality_note", "workspace": {"path", "project_id", "snapshot_id"}}``. ``quality`` (arms only,
    None when not measurable, ``quality_note`` says why) is :func:`quality_summary`'s.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = _Workspace(Path(workspace) if workspace else out / WORKSPACE_DIR, project)
    champion, canary = impression_frame(logs, "champion"), impression_frame(logs, "canary")
    for arm, frame in (("champion", champion), ("canary", canary)):
        if frame.empty:
            raise DataValidationError(f"drift report: the {arm} arm has no impressions to compare")
    result = {"arms": _compare(canary, champion, out / "drift_arms.html", max_rows, seed, store, "arms",
                               ("canary", "champion"))}
    if reference is not None:
        shared = [c for c in NUMERICAL + CATEGORICAL if c in reference.columns]
        if not shared or reference.empty:
            raise DataValidationError("drift report: the training reference needs rows and at least one of "
                                      f"the columns {NUMERICAL + CATEGORICAL}; it has {list(reference.columns)}")
        result["training"] = _compare(canary, _conform_reference(reference, shared), out / "drift_training.html",
                                      max_rows, seed, store, "training")
    return result


__all__ = ["PROJECT", "drift_report", "impression_frame", "quality_note", "quality_summary", "summarize"]
