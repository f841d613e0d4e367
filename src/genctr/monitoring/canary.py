"""One turn of the canary loop: collect logs -> analyse -> decide -> act.

    outcome = run_canary_step(log_dir, deployer, CanaryPolicy(), out_dir,
                              registry=ModelRegistry(root), model_name="genctr-ctr")

The analysis reads only the A/B log tables (:mod:`genctr.monitoring.logs`); the action goes
through the :class:`~genctr.deploy.base.Deployer` interface only, so the same step drives a
local ModelServer and a KServe InferenceService. A promotion also moves the registry's
champion pointer to the canary's version (the gate of the next training run compares against
it); a rollback leaves the pointer where it is. Every decision is appended, with its numbers,
to ``<out_dir>/decisions.jsonl`` and logged. Every file is written to a unique temporary name
and renamed into place, and numbers that are not finite are written as null, so a reader never
sees half a line, an empty file or a NaN that strict JSON parsers refuse.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from genctr.atomic import write_text
from genctr.errors import ConfigError
from genctr.monitoring.analysis import ABAnalysis, analyze, arm_metrics, json_safe, uplift_over_time
from genctr.monitoring.decision import CanaryPolicy, Decision, decide
from genctr.monitoring.logs import ARMS, ABLogs, read_logs

if TYPE_CHECKING:
    from genctr.deploy.base import Deployer
    from genctr.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class CanaryOutcome:
    decision: Decision
    analysis: ABAnalysis
    acted: str  # "promoted" | "rolled back" | "none" (continue, or act=False)
    champion_uri: str | None  # after the action
    canary_uri: str | None  # the canary that was judged
    canary_version: int | None  # its registry version, when known
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe (NaN/inf -> None) summary of the turn."""
        return json_safe({"action": self.decision.action, "acted": self.acted, "reasons": self.decision.reasons,
                          "numbers": self.decision.numbers, "analysis": self.analysis.to_dict(),
                          "champion_uri": self.champion_uri, "canary_uri": self.canary_uri,
                          "canary_version": self.canary_version, "paths": self.paths})


def window(logs: ABLogs, since_ts: int | None) -> ABLogs:
    """Only traffic at or after ``since_ts`` (the canary's start): earlier rollouts don't count."""
    if not since_ts:
        return logs
    return ABLogs(logs.requests[logs.requests["ts"] >= since_ts].reset_index(drop=True),
                  logs.impressions[logs.impressions["ts"] >= since_ts].reset_index(drop=True),
                  logs.clicks[logs.clicks["ts"] >= since_ts].reset_index(drop=True),
                  logs.quality)  # counted over the whole log: a duplicate is a fault wherever it is


def version_of(registry: ModelRegistry, name: str, uri: str) -> int | None:
    """The registered version of ``name`` stored at ``uri`` (None when it is not in the registry)."""
    for v in reversed(registry.list_versions(name)):
        if registry.get(name, v).uri.rstrip("/") == uri.rstrip("/"):
            return v
    return None


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def append_line(path: Path, obj: Any) -> None:
    """Append one JSON line to ``path`` by rewriting it whole (temporary file + rename).

    A decision log grows by one short line per canary turn, so the copy is cheap, and a crash
    leaves the old file or the new one, never a torn last line.
    """
    line = json.dumps(json_safe(obj), allow_nan=False) + "\n"  # serialised first: a failure writes nothing
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"  # a line written by an older version without its newline stays a line of its own
    write_text(path, old + line)


def analyse_logs(logs: ABLogs, canary_percent: int, policy: CanaryPolicy, out_dir: str | Path,
                 *, plots: bool = True) -> tuple[ABAnalysis, Decision, dict[str, str]]:
    """Analysis + decision (no action), with ``analysis.json``, ``arms.csv`` and the plots in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(logs, canary_percent, policy)
    decision = decide(analysis, policy)
    paths = {"analysis": str(out / "analysis.json"), "arms": str(out / "arms.csv")}
    _write_json(out / "analysis.json", {"analysis": analysis.to_dict(), "decision": decision.to_dict()})
    write_text(out / "arms.csv", arm_metrics(logs).to_csv())
    if plots and len(logs.impressions):
        from genctr.monitoring.plots import plot_arm_bars, plot_uplift_over_time

        over_time = uplift_over_time(logs, canary_percent, policy)
        over_time.to_csv(out / "uplift_over_time.csv", index=False)
        paths["uplift_png"] = str(plot_uplift_over_time(over_time, out / "uplift.png",
                                                        threshold=policy.ctr_uplift_threshold))
        paths["arms_png"] = str(plot_arm_bars(arm_metrics(logs), out / "arms.png"))
        paths["uplift_csv"] = str(out / "uplift_over_time.csv")
    return analysis, decision, paths


def act(decision: Decision, deployer: Deployer, registry: ModelRegistry | None, model_name: str,
        canary_version: int | None) -> str:
    """Carry out ``decision`` through the deployer (and the registry pointer on promotion)."""
    if decision.action == "promote":
        deployer.promote()
        if registry is not None and canary_version is not None:
            registry.set_champion(model_name, canary_version, reason="canary promoted: " + "; ".join(decision.reasons))
        return "promoted"
    if decision.action == "rollback":
        deployer.rollback()
        return "rolled back"
    return "none"


def run_canary_step(log_dir: str | Path, deployer: Deployer, policy: CanaryPolicy, out_dir: str | Path, *,
                    registry: ModelRegistry | None = None, model_name: str = "genctr-ctr",
                    since_ts: int | None = None, reference: pd.DataFrame | None = None,
                    drift: bool = True, dry_run: bool = False) -> CanaryOutcome:
    """Judge the deployment's running canary on the logs in ``log_dir`` and act on the verdict."""
    status = deployer.status()
    if not status.canary_uri:
        raise ConfigError(f"deployment {status.name} has no canary in progress: nothing to judge")
    logs = window(read_logs(log_dir, policy.duplicates), since_ts)
    out = Path(out_dir)
    analysis, decision, paths = analyse_logs(logs, status.canary_percent, policy, out)
    if drift and all((logs.impressions["arm"] == arm).any() for arm in ARMS):  # drift compares two arms
        from genctr.monitoring.drift import drift_report

        reports = drift_report(logs, out, reference=reference)
        paths.update({f"drift_{k}": v["path"] for k, v in reports.items()})
    canary_version = version_of(registry, model_name, status.canary_uri) if registry is not None else None
    acted = "none" if dry_run else act(decision, deployer, registry, model_name, canary_version)
    after = deployer.status() if acted != "none" else status
    outcome = CanaryOutcome(decision, analysis, acted, after.champion_uri, status.canary_uri, canary_version, paths)
    entry = {"time": time.time(), "deployment": status.name, "canary_percent": status.canary_percent,
             "dry_run": dry_run, **outcome.to_dict()}
    append_line(out / "decisions.jsonl", entry)
    _write_json(out / "decision.json", entry)
    paths["decision"] = str(out / "decision.json")
    log.info("canary %s (%s): %s -> %s; %s", status.canary_uri, status.name, decision.action, acted,
             "; ".join(decision.reasons))
    return outcome
