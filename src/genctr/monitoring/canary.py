"""One turn of the canary loop: collect -> analyse -> decide -> act.

    logs = collect(log_dir, since_ts, duplicates=policy.duplicates)
    decision = judge(logs, deployer.status(), policy, out_dir)     # analyse + decide: decision.json
    result = act(decision, deployer, registry=ModelRegistry(root), model_name="genctr-ctr")

or the three in one call, with the turn appended to ``<out_dir>/decisions.jsonl``::

    turn = run_canary_step(log_dir, deployer, CanaryPolicy(), out_dir, registry=..., model_name=...)

``genctr canary step`` and the demo call :func:`run_canary_step`; the canary pipeline runs the
same functions as three steps (``collect_to`` / :func:`read_collected` carry the logs between
the first two). A deployment without a canary in progress is judged ``continue`` with that
reason, so an hourly schedule has nothing to do rather than a failure. The analysis reads only
the A/B log tables (:mod:`genctr.monitoring.logs`); the action goes through the
:class:`~genctr.deploy.base.Deployer` interface only, so the same turn drives a local
ModelServer and a KServe InferenceService. A promotion also moves the registry's champion
pointer to the canary's version (the next training run's gate compares against it); a rollback
leaves it where it is. What is written, and its shape: :mod:`genctr.monitoring.canary_record`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from genctr.atomic import atomic_path, write_json, write_text
from genctr.errors import ConfigError
from genctr.monitoring import decision as rules
from genctr.monitoring.analysis import ABAnalysis, analyze, arm_metrics, uplift_over_time
from genctr.monitoring.canary_record import CanaryDecision, CanaryResult, append_turn, turn_line, write_decision
from genctr.monitoring.collect import collect, window
from genctr.monitoring.decision import CanaryPolicy
from genctr.monitoring.logs import ARMS, ABLogs
from genctr.monitoring.units import pre_period_totals

if TYPE_CHECKING:
    from genctr.deploy.base import Deployer, DeploymentStatus
    from genctr.registry import ModelRegistry

log = logging.getLogger(__name__)

# decision numbers shown on the pipeline run page (KFP Metrics), when finite
CANARY_METRICS = ("ctr_uplift", "ctr_lo", "ctr_hi", "ctr_p", "rpm_uplift", "rpm_lo", "rpm_hi", "rpm_p", "srm_p",
                  "users_champion", "users_canary", "impressions_champion", "impressions_canary",
                  "canary_error_rate", "canary_p99_latency_ms")


def load_policy(data: Mapping[str, Any] | None) -> CanaryPolicy:
    """A :class:`CanaryPolicy` from a run form's, a file's or the CLI's mapping (None: defaults)."""
    if isinstance(data, Mapping):
        hints = typing.get_type_hints(CanaryPolicy)
        # a KFP struct parameter carries every number as a double: 200 arrives as 200.0
        data = {k: int(v) if hints.get(k) is int and isinstance(v, float) and v.is_integer() else v
                for k, v in data.items()}
    return CanaryPolicy.from_dict(data)


# ----------------------------------------------------------------------------- analyse
@dataclass
class CanaryAnalysis:
    """What :func:`analyse` found; ``files`` maps artifact -> file name in its ``out_dir``."""

    analysis: ABAnalysis
    drift: dict[str, Any] | None  # canary vs champion impressions (genctr.monitoring.drift); None if not run
    files: dict[str, str]


def analyse(logs: ABLogs, canary_percent: int, out_dir: str | Path, *, alpha: float = 0.05,
            min_users_per_arm: int = 200, min_impressions_per_arm: int = 2_000, ctr_uplift_threshold: float = 0.0,
            method: str = "sequential", sequential_tuning_n: int = 10_000, analysis_unit: str = "auto",
            pre_period: pd.DataFrame | None = None, drift: bool = True, plots: bool = True,
            reference: pd.DataFrame | None = None) -> CanaryAnalysis:
    """Uplifts with (1 - alpha) intervals, SRM and arm metrics of ``logs`` (split at ``canary_percent``).

    ``method``: ``sequential`` (always-valid: the schedule may look as often as it likes) or
    ``fixed_horizon`` (one planned look); ``analysis_unit``: ``auto`` = the randomisation unit the
    logs record; ``pre_period`` (:func:`genctr.monitoring.units.pre_period_totals`): CUPED.

    Writes ``analysis.json`` and ``arms.csv``; with ``plots`` (and traffic) ``uplift.png`` (the
    threshold drawn in), ``arms.png`` and ``uplift_over_time.csv``; with ``drift`` (and both
    arms shown) ``drift_arms.html``, and ``drift_training.html`` given a training ``reference``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # what genctr.monitoring.analysis reads of a policy: level, minimums, method, unit, CUPED
    wanted = CanaryPolicy(alpha=alpha, min_users_per_arm=min_users_per_arm,
                          min_impressions_per_arm=min_impressions_per_arm, method=method,
                          sequential_tuning_n=sequential_tuning_n, analysis_unit=analysis_unit,
                          cuped=pre_period is not None)
    result = analyze(logs, canary_percent, wanted, pre_period=pre_period)
    arms = arm_metrics(logs)
    write_json(out / "analysis.json", result.to_dict(), allow_nan=False)
    write_text(out / "arms.csv", arms.to_csv())
    files = {"analysis": "analysis.json", "arms": "arms.csv"}
    if plots and len(logs.impressions):
        from genctr.monitoring.plots import plot_arm_bars, plot_uplift_over_time

        over_time = uplift_over_time(logs, canary_percent, wanted, pre_period=pre_period)
        with atomic_path(out / "uplift_over_time.csv") as tmp:
            over_time.to_csv(tmp, index=False)
        files["uplift_png"] = plot_uplift_over_time(over_time, out / "uplift.png", threshold=ctr_uplift_threshold).name
        files["arms_png"] = plot_arm_bars(arms, out / "arms.png").name
        files["uplift_csv"] = "uplift_over_time.csv"
    summary = None
    if drift and all((logs.impressions["arm"] == arm).any() for arm in ARMS):  # drift compares two arms
        from genctr.monitoring.drift import drift_report

        reports = drift_report(logs, out, reference=reference)
        files.update({f"drift_{k}": Path(v["path"]).name for k, v in reports.items()})
        summary = reports["arms"]
    return CanaryAnalysis(result, summary, files)


# ----------------------------------------------------------------------------- decide
def decide(analysed: CanaryAnalysis, status: DeploymentStatus, policy: CanaryPolicy, *,
           target: str | None = None) -> CanaryDecision:
    """The policy's verdict (rules in :mod:`genctr.monitoring.decision`) on the canary of ``status``."""
    verdict = rules.decide(analysed.analysis, policy)
    return CanaryDecision(time=time.time(), deployment=status.name, target=target,
                          champion_uri=status.champion_uri, canary_uri=status.canary_uri,
                          canary_percent=analysed.analysis.canary_percent, action=verdict.action,
                          reasons=verdict.reasons, numbers=verdict.to_dict()["numbers"],
                          policy=dataclasses.asdict(policy), analysis=analysed.analysis.to_dict(),
                          drift=analysed.drift, files=dict(analysed.files))


def no_canary(status: DeploymentStatus, policy: CanaryPolicy, *, target: str | None = None) -> CanaryDecision:
    """``continue``: a deployment without a canary in progress has nothing to judge."""
    return CanaryDecision(time=time.time(), deployment=status.name, target=target,
                          champion_uri=status.champion_uri, canary_uri=None, canary_percent=0, action="continue",
                          reasons=[f"deployment {status.name} has no canary in progress: nothing to judge"],
                          policy=dataclasses.asdict(policy))


def judge(logs: ABLogs, status: DeploymentStatus, policy: CanaryPolicy, out_dir: str | Path, *,
          target: str | None = None, canary_percent: int = 0, drift: bool = True, plots: bool = True,
          reference: pd.DataFrame | None = None, pre_period: pd.DataFrame | None = None) -> CanaryDecision:
    """Analyse and decide (no action): ``decision.json`` and ``report.html`` in ``out_dir``.

    ``canary_percent`` 0: the split of ``status``. Without a canary in progress the logs are not
    analysed and the decision is :func:`no_canary`'s.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if status.canary_uri is None:
        verdict = no_canary(status, policy, target=target)
    else:
        if policy.cuped and pre_period is None:
            raise ConfigError("the canary policy has cuped=true but no pre-period totals were given: pass "
                              "pre_period=genctr.monitoring.units.pre_period_totals(all_logs, since_ts) "
                              "(run_canary_step does), or set cuped=false")
        analysed = analyse(logs, canary_percent or status.canary_percent, out, alpha=policy.alpha,
                           min_users_per_arm=policy.min_users_per_arm,
                           min_impressions_per_arm=policy.min_impressions_per_arm,
                           ctr_uplift_threshold=policy.ctr_uplift_threshold, method=policy.method,
                           sequential_tuning_n=policy.sequential_tuning_n, analysis_unit=policy.analysis_unit,
                           pre_period=pre_period if policy.cuped else None, drift=drift, plots=plots,
                           reference=reference)
        verdict = decide(analysed, status, policy, target=target)
    from genctr.monitoring.report import canary_html

    write_decision(out, verdict)
    write_text(out / "report.html", canary_html(verdict.to_dict(), out))
    log.info("canary %s (%s): %s; %s", verdict.canary_uri, verdict.deployment, verdict.action,
             "; ".join(verdict.reasons))
    return verdict


# ----------------------------------------------------------------------------- act
def version_of(registry: ModelRegistry, name: str, uri: str) -> int | None:
    """The registered version of ``name`` stored at ``uri`` (None when it is not in the registry)."""
    for v in reversed(registry.list_versions(name)):
        if registry.get(name, v).uri.rstrip("/") == uri.rstrip("/"):
            return v
    return None


def act(decision: CanaryDecision, deployer: Deployer, *, registry: ModelRegistry | None = None,
        model_name: str = "genctr-ctr", dry_run: bool = False) -> CanaryResult:
    """Carry out ``decision`` through ``deployer`` and the registry's aliases (``champion`` moves to
    the canary's version on promotion, which clears ``canary``; a rollback clears ``canary``).

    Raises ConfigError when the deployment's canary is no longer the one judged: a decision
    about one model is never applied to another.
    """
    status = deployer.status()
    judged = (decision.deployment, decision.canary_uri)
    if decision.action != "continue" and (status.name, status.canary_uri) != judged:
        raise ConfigError(f"deployment {status.name}'s canary is now {status.canary_uri}, but the analysis judged "
                          f"{decision.canary_uri} on {decision.deployment}: nothing done; analyse the current "
                          "canary again")
    version = None
    if registry is not None and status.canary_uri:
        version = version_of(registry, model_name, status.canary_uri)
    acted = "none"
    if not dry_run and decision.action == "promote":
        deployer.promote()
        if registry is not None and version is not None:
            registry.set_champion(model_name, version, reason="canary promoted: " + "; ".join(decision.reasons))
        acted = "promoted"
    elif not dry_run and decision.action == "rollback":
        deployer.rollback()
        if registry is not None and version is not None and registry.canary(model_name) == version:
            registry.clear_canary(model_name)  # the registry's @canary no longer names a served model
        acted = "rolled back"
    after = deployer.status() if acted != "none" else status
    log.info("canary %s on %s: %s -> %s%s", decision.canary_uri, status.name, decision.action, acted,
             " (dry run)" if dry_run else "")
    return CanaryResult(action=decision.action, acted=acted, dry_run=dry_run, deployment=status.name,
                        canary_uri=decision.canary_uri, canary_version=version, champion_uri=after.champion_uri,
                        registry_champion=registry.champion(model_name) if registry is not None else None)


# ----------------------------------------------------------------------------- the whole turn
@dataclass
class CanaryTurn:
    """One turn: the decision (``decision.json``), what was done, and where the files are."""

    decision: CanaryDecision
    result: CanaryResult
    out_dir: Path

    @property
    def paths(self) -> dict[str, str]:
        """Artifact -> absolute path: the analysis' files, ``decision``, ``report`` and ``history``."""
        out = self.out_dir
        return {**{k: str(out / name) for k, name in self.decision.files.items()},
                "decision": str(out / "decision.json"), "report": str(out / "report.html"),
                "history": str(out / "decisions.jsonl")}

    def to_dict(self) -> dict[str, Any]:
        """The turn's ``decisions.jsonl`` line: the decision's fields plus ``result``."""
        return turn_line(self.decision, self.result)


def run_canary_step(log_dir: str | Path, deployer: Deployer, policy: CanaryPolicy, out_dir: str | Path, *,
                    registry: ModelRegistry | None = None, model_name: str = "genctr-ctr",
                    since_ts: int | None = None, reference: pd.DataFrame | None = None, drift: bool = True,
                    dry_run: bool = False, target: str | None = None, spark_master: str = "local[*]") -> CanaryTurn:
    """collect -> judge -> act on the deployment's canary, appended to ``<out_dir>/decisions.jsonl``.

    With ``policy.cuped`` the logs before ``since_ts`` are read too: each unit's pre-period
    totals are the covariate (they predate the canary, so it cannot have moved them). Raw clicks
    are attributed by Spark on ``spark_master`` (:func:`~genctr.monitoring.collect.collect`)."""
    pre_period = None
    if policy.cuped:
        full = collect(log_dir, 0, duplicates=policy.duplicates, spark_master=spark_master)
        logs, pre_period = window(full, since_ts or None), pre_period_totals(full, since_ts or 0)
    else:
        logs = collect(log_dir, since_ts or 0, duplicates=policy.duplicates, spark_master=spark_master)
    decision = judge(logs, deployer.status(), policy, out_dir, target=target, drift=drift, reference=reference,
                     pre_period=pre_period)
    result = act(decision, deployer, registry=registry, model_name=model_name, dry_run=dry_run)
    append_turn(out_dir, decision, result)
    return CanaryTurn(decision, result, Path(out_dir))


def run_page_metrics(decision: CanaryDecision) -> dict[str, float]:
    """The finite numbers of :data:`CANARY_METRICS` in ``decision`` (for KFP Metrics)."""
    return {k: float(decision.numbers[k]) for k in CANARY_METRICS if decision.numbers.get(k) is not None}


__all__ = ["CANARY_METRICS", "CanaryAnalysis", "CanaryTurn", "act", "analyse", "decide", "judge", "load_policy",
           "no_canary", "run_canary_step", "run_page_metrics", "version_of"]
