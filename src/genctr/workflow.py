"""The workflow's steps as plain library functions over paths.

Each KFP component's body calls exactly one of these; the CLI and `make demo` call the
same functions, so a laptop run exercises the code a cluster run does. Inputs and outputs
are directories or files; every writer writes to a temp path and renames.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.config import DataConfig, FeatureConfig
from genctr.errors import ConfigError

if TYPE_CHECKING:
    from genctr.deploy.factory import DeployTarget

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What a step produced: its main output path and a JSON-able summary."""

    path: str
    summary: dict[str, Any]


def export_events(data: DataConfig, out: str | Path) -> StepResult:
    """Source adapter -> canonical events Parquet at ``out``."""
    from genctr.data.export import export_events as _export

    dest = _export(data, out)
    return StepResult(str(dest), {"source": data.source})


def validate_events(events: str | Path, report_dir: str | Path) -> StepResult:
    """GX events suite; raises DataValidationError (with report_path) on failure."""
    from genctr.features.checks import check_events

    report = check_events(events, report_dir)
    return StepResult(str(report), {"passed": True})


def build_features(events: str | Path, out: str | Path, cfg: FeatureConfig) -> StepResult:
    """Spark feature build -> a build directory (see genctr.features.layout)."""
    from genctr.features.spark_build import build_features as _build

    stats = _build(events, out, cfg)
    return StepResult(str(out), stats)


def validate_samples(build: str | Path, report_dir: str | Path) -> StepResult:
    """GX samples suite on a build; raises DataValidationError on failure."""
    from genctr.features.checks import check_samples

    report = check_samples(build, report_dir)
    return StepResult(str(report), {"passed": True})


def materialize(build: str | Path, work_dir: str | Path, online: str = "sqlite",
                redis_url: str = "localhost:6379") -> StepResult:
    """Feast: write sources, apply, materialise the online store."""
    from genctr.features.feast_sync import materialize as _materialize

    _materialize(build, online=online, redis_url=redis_url, work_dir=work_dir)
    return StepResult(str(work_dir), {"online": online})


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def pretrain(build: str | Path, out: str | Path, method: str, model: dict[str, Any],
             train: dict[str, Any]) -> StepResult:
    """GenCTR or DGenCTR pretraining -> a pretrained model artifact at ``out``."""
    from genctr.training.run import pretrain as _pretrain

    return StepResult(str(out), _pretrain(build, out, method, model, train))


def finetune(build: str | Path, out: str | Path, model: dict[str, Any], train: dict[str, Any],
             pretrained: str | Path | None = None) -> StepResult:
    """Fine-tune a CTR model (transfer from ``pretrained`` if given) -> artifact at ``out``."""
    from genctr.training.run import finetune as _finetune

    return StepResult(str(out), _finetune(build, out, model, train, pretrained))


def evaluate_gate(build: str | Path, candidate: str | Path, registry_root: str, name: str,
                  gate: dict[str, Any], out_dir: str | Path) -> StepResult:
    """Candidate vs the registry's champion on the same test rows; report + decision in ``out_dir``."""
    from genctr.evaluation.champion import evaluate_against_champion

    result = evaluate_against_champion(build, candidate, registry_root, name, gate, out_dir)
    return StepResult(str(Path(out_dir) / "report.html"), result)


def register(candidate: str | Path, registry_root: str, name: str, metadata: dict[str, Any],
             set_champion: bool = False) -> StepResult:
    """Register ``candidate`` as the next version of ``name`` (and make it champion if asked)."""
    from genctr.registry import ModelRegistry

    reg = ModelRegistry(registry_root)
    version = reg.register(candidate, name, metadata)
    if set_champion:
        reg.set_champion(name, version, reason="passed the gate (no canary)")
    mv = reg.get(name, version)
    return StepResult(mv.uri, {"version": str(version), "champion": str(reg.champion(name)), "uri": mv.uri})


def deploy_model(registry_root: str, name: str, version: int, canary_percent: int,
                 target: DeployTarget) -> StepResult:
    """Roll a registered version out: the first model becomes the champion (and the registry's
    champion); later ones start as a canary at ``canary_percent`` % for the canary loop to judge."""
    from genctr.deploy.factory import make_deployer
    from genctr.registry import ModelRegistry

    reg = ModelRegistry(registry_root)
    mv = reg.get(name, int(version))
    deployer = make_deployer(target)
    try:
        current = deployer.status().champion_uri
    except ConfigError:
        current = None  # nothing deployed yet
    if current is None:
        status = deployer.deploy(mv.uri)
        reg.set_champion(name, mv.version, reason="first deployment")
        action = "deploy"
    elif current == mv.uri:
        status, action = deployer.status(), "unchanged"
    else:
        status = deployer.start_canary(mv.uri, canary_percent)
        action = "start_canary"
    summary = {"action": action, "version": mv.version, "uri": mv.uri, "champion_uri": status.champion_uri,
               "canary_uri": status.canary_uri, "canary_percent": status.canary_percent, "urls": status.urls,
               "target": target.kind, "deployment": target.name}
    log.info("deploy %s v%d: %s", name, mv.version, summary)
    return StepResult(mv.uri, summary)


# ----------------------------------------------------------------------------- canary loop
# The canary pipeline's steps (components/canary.py) and `genctr canary step`. The pipeline
# splits run_canary_step into collect -> analyse -> act so each step's artifacts show up on
# the run page and the action runs only under a condition.


def ab_log_dir(log_dir: str, deployment: str) -> str:
    """``log_dir``, or the default ``$GENCTR_HOME/ab-logs/<deployment>`` when it is ''."""
    from genctr.paths import home

    return log_dir or str(home() / "ab-logs" / deployment)


@contextmanager
def _local_logs(log_dir: str) -> Iterator[str]:
    """A local directory with the log tables: ``log_dir`` itself, or a temporary copy of an fsspec URI."""
    if "://" not in log_dir:
        yield log_dir
        return
    import tempfile

    import fsspec

    from genctr.monitoring.logs import SCHEMAS

    fs, root = fsspec.core.url_to_fs(log_dir)
    with tempfile.TemporaryDirectory(prefix="ab-logs-") as tmp:
        for table in SCHEMAS:
            Path(tmp, table).mkdir()
            for remote in fs.glob(f"{root.rstrip('/')}/{table}/part-*.parquet"):
                fs.get_file(remote, str(Path(tmp, table, Path(remote).name)))
        yield tmp


def _per_arm(logs: Any) -> dict[str, dict[str, int]]:
    """Users, requests, impressions and clicks of each arm (from the analysis' own arm table)."""
    from genctr.monitoring.analysis import arm_metrics

    table = arm_metrics(logs)
    return {kind: {arm: int(table.at[arm, kind]) for arm in table.index}
            for kind in ("users", "requests", "impressions", "clicks")}


def collect_canary_logs(log_dir: str, since_ts: int, out_dir: str | Path) -> StepResult:
    """Read and check the A/B logs of ``log_dir`` (path or fsspec URI), keep ``ts >= since_ts``
    (0 = all) and write the three tables as Parquet in the same layout to ``out_dir``.

    Clicks on impressions before the window are dropped with them, so the copy reads back clean.
    Raises DataValidationError (naming the table and column) on a malformed table.
    """
    from genctr.monitoring.canary import window
    from genctr.monitoring.logs import SCHEMAS, append, read_logs

    if since_ts < 0:
        raise ConfigError(f"since_ts must be epoch seconds >= 0 (0 = all traffic), got {since_ts}")
    with _local_logs(log_dir) as local:
        if not Path(local).is_dir():
            raise ConfigError(f"A/B log directory {log_dir} does not exist")
        logs = window(read_logs(local), since_ts or None)
    shown = logs.impressions[["request_id", "item_id"]].drop_duplicates()
    tables = {"requests": logs.requests, "impressions": logs.impressions[list(SCHEMAS["impressions"])],
              "clicks": logs.clicks.merge(shown, on=["request_id", "item_id"], how="inner")}
    for table, df in tables.items():
        append(out_dir, table, df)
    counts = _per_arm(logs)
    metadata = {f"{kind}_{arm}": n for kind, arms in counts.items() for arm, n in arms.items()}
    log.info("collected A/B logs from %s since %s: %s", log_dir, since_ts, metadata)
    return StepResult(str(out_dir), {"log_dir": log_dir, "since_ts": since_ts, **counts, "metadata": metadata})


CANARY_METRICS = ("ctr_uplift", "ctr_lo", "ctr_hi", "ctr_p", "rpm_uplift", "rpm_lo", "rpm_hi", "rpm_p", "srm_p",
                  "users_champion", "users_canary", "impressions_champion", "impressions_canary",
                  "canary_error_rate", "canary_p99_latency_ms")


def analyze_canary(log_dir: str | Path, policy: dict[str, Any], out_dir: str | Path,
                   target: DeployTarget | None = None, *, canary_percent: int = 0,
                   drift: bool = True) -> StepResult:
    """Analysis + decision (no action) of the canary running on ``target``, into ``out_dir``.

    Writes ``decision.json`` (what :func:`act_on_canary` reads), ``analysis.json``, ``arms.csv``,
    the plots, ``drift_arms.html`` (with ``drift``) and ``report.html``. ``canary_percent`` 0:
    the deployment's current split. A deployment without a canary gives ``continue`` with that
    reason (a scheduled run then has nothing to do). The summary is the decision entry plus
    ``metrics`` (finite numbers of :data:`CANARY_METRICS`, for the run page).
    """
    from genctr.atomic import write_text
    from genctr.monitoring.canary import analyse_logs
    from genctr.monitoring.decision import CanaryPolicy
    from genctr.monitoring.logs import read_logs
    from genctr.monitoring.report import canary_html

    cfg = CanaryPolicy.from_dict(policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status = None
    if target is not None:
        from genctr.deploy.factory import make_deployer

        status = make_deployer(target).status()
    entry: dict[str, Any] = {
        "deployment": status.name if status else None, "target": target.kind if target else None,
        "champion_uri": status.champion_uri if status else None, "canary_uri": status.canary_uri if status else None,
        "canary_percent": canary_percent or (status.canary_percent if status else 0),
        "policy": dataclasses.asdict(cfg), "numbers": {}, "analysis": None, "drift": None, "files": {}}
    if status is not None and status.canary_uri is None:
        entry.update(action="continue", reasons=[f"deployment {status.name} has no canary in progress: "
                                                 "nothing to judge"])
    elif not entry["canary_percent"]:
        raise ConfigError("give canary_percent (1..99) or a deploy target whose canary is in progress")
    else:
        logs = read_logs(log_dir)
        analysis, decision, paths = analyse_logs(logs, entry["canary_percent"], cfg, out)
        entry.update(action=decision.action, reasons=decision.reasons, numbers=decision.to_dict()["numbers"],
                     analysis=analysis.to_dict())
        if drift and all((logs.impressions["arm"] == arm).any() for arm in ("champion", "canary")):
            from genctr.monitoring.drift import drift_report

            entry["drift"] = drift_report(logs, out)["arms"]
            paths["drift_arms"] = entry["drift"]["path"]
        entry["files"] = {k: Path(v).name for k, v in paths.items()}  # relative: the directory moves
    write_text(out / "decision.json", json.dumps(entry, indent=2, allow_nan=False))
    write_text(out / "report.html", canary_html(entry, out))
    metrics = {k: float(entry["numbers"][k]) for k in CANARY_METRICS if entry["numbers"].get(k) is not None}
    log.info("canary analysis of %s: %s (%s)", entry["canary_uri"], entry["action"], "; ".join(entry["reasons"]))
    return StepResult(str(out / "decision.json"), {**entry, "metrics": metrics})


def act_on_canary(analysis_dir: str | Path, registry_root: str, name: str, target: DeployTarget, *,
                  dry_run: bool = False) -> StepResult:
    """Carry out the decision in ``analysis_dir/decision.json`` on ``target`` (and the registry).

    Raises ConfigError when the deployment's canary is no longer the one analysed: a decision
    about one model is never applied to another.
    """
    from genctr.deploy.factory import make_deployer
    from genctr.monitoring.canary import act, version_of
    from genctr.monitoring.decision import Decision
    from genctr.registry import ModelRegistry

    entry = read_json(Path(analysis_dir) / "decision.json")
    decision = Decision(entry["action"], entry["reasons"], entry["numbers"])
    deployer = make_deployer(target)
    status = deployer.status()
    if decision.action != "continue" and status.canary_uri != entry["canary_uri"]:
        raise ConfigError(f"deployment {status.name}'s canary is now {status.canary_uri}, but the analysis judged "
                          f"{entry['canary_uri']}: nothing done; analyse the current canary again")
    reg = ModelRegistry(registry_root)
    version = version_of(reg, name, status.canary_uri) if status.canary_uri else None
    acted = "none" if dry_run else act(decision, deployer, reg, name, version)
    after = deployer.status() if acted != "none" else status
    summary = {"action": decision.action, "acted": acted, "dry_run": dry_run, "deployment": status.name,
               "canary_uri": entry["canary_uri"], "canary_version": version, "champion_uri": after.champion_uri,
               "registry_champion": reg.champion(name)}
    log.info("canary %s on %s: %s -> %s%s", entry["canary_uri"], status.name, decision.action, acted,
             " (dry run)" if dry_run else "")
    return StepResult(str(after.champion_uri), summary)


def canary_step(log_dir: str, target: DeployTarget, policy: dict[str, Any], out_dir: str | Path, *,
                registry_root: str, name: str, since_ts: int | None = None, drift: bool = True,
                dry_run: bool = False) -> Any:
    """One turn of the canary loop in one call (``genctr canary step``): a CanaryOutcome."""
    from genctr.deploy.factory import make_deployer
    from genctr.monitoring.canary import run_canary_step
    from genctr.monitoring.decision import CanaryPolicy
    from genctr.registry import ModelRegistry

    cfg = CanaryPolicy.from_dict(policy)
    with _local_logs(log_dir) as local:
        if not Path(local).is_dir():
            raise ConfigError(f"A/B log directory {log_dir} does not exist")
        return run_canary_step(local, make_deployer(target), cfg, out_dir, registry=ModelRegistry(registry_root),
                               model_name=name, since_ts=since_ts, drift=drift, dry_run=dry_run)
