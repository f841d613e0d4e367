"""The workflow's steps as plain library functions over paths.

Each KFP component's body calls exactly one of these; the CLI and `make demo` call the
same functions, so a laptop run exercises the code a cluster run does. Inputs and outputs
are directories or files; every writer writes to a temp path and renames. The canary loop's
steps are :mod:`genctr.monitoring.canary` (and :mod:`genctr.monitoring.collect`).
"""
from __future__ import annotations

import json
import logging
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


def export_events(data: DataConfig, out: str | Path, behaviours_out: str | Path | None = None) -> StepResult:
    """Source adapter -> canonical events Parquet at ``out``; with ``behaviours_out`` a behaviour log
    there too (empty unless ``data.behaviour_log``: ``genctr.data.export``)."""
    from genctr.data.export import export_events as _export

    dest = _export(data, out, behaviours_out=behaviours_out)
    return StepResult(str(dest), {"source": data.source})


def validate_events(events: str | Path, report_dir: str | Path) -> StepResult:
    """GX events suite; raises DataValidationError (with report_path) on failure."""
    from genctr.features.checks import check_events

    report = check_events(events, report_dir)
    return StepResult(str(report), {"passed": True})


def build_features(events: str | Path, out: str | Path, cfg: FeatureConfig,
                   behaviours: str | Path | None = None) -> StepResult:
    """Spark feature build -> a build directory (see genctr.features.layout); ``behaviours`` an
    optional behaviour log whose rows join the clicked impressions as behaviours."""
    from genctr.features.spark_build import build_features as _build

    stats = _build(events, out, cfg, behaviours=behaviours)
    return StepResult(str(out), stats)


def validate_samples(build: str | Path, report_dir: str | Path) -> StepResult:
    """GX samples suite on a build; raises DataValidationError on failure."""
    from genctr.features.checks import check_samples

    report = check_samples(build, report_dir)
    return StepResult(str(report), {"passed": True})


def validate_with_reports(suite: str, target: str | Path, html_out: str | Path, md_out: str | Path) -> StepResult:
    """Run the GX ``suite`` ("events" or "samples") on ``target`` and copy its HTML and Markdown
    reports to ``html_out`` / ``md_out`` (a component's artifacts), whether it passes or raises;
    the suite's own report directory is temporary and removed either way."""
    import shutil
    import tempfile

    suites = {"events": validate_events, "samples": validate_samples}
    if suite not in suites:
        raise ValueError(f"unknown GX suite {suite!r}: use one of {', '.join(suites)}")
    with tempfile.TemporaryDirectory(prefix=f"gx-{suite}-") as report_dir:
        try:
            return suites[suite](target, report_dir)
        finally:  # the report says what failed: keep it even when the suite raises
            for ext, out in ((".html", html_out), (".md", md_out)):
                for name in sorted(f.name for f in Path(report_dir).iterdir() if f.suffix == ext)[:1]:
                    shutil.copyfile(Path(report_dir) / name, out)
                    log.info("%s suite report kept as %s", suite, out)  # the scratch copy goes


def materialize(build: str | Path, work_dir: str | Path, online: str = "sqlite",
                redis_url: str = "localhost:6379", registry: str = "", sources: str = "") -> StepResult:
    """Feast: publish sources (to ``sources`` if given), apply to ``registry``, materialise the online store."""
    from genctr.features.feast_sync import materialize as _materialize

    store = _materialize(build, online=online, redis_url=redis_url, work_dir=work_dir, registry=registry,
                         sources=sources)
    return StepResult(str(work_dir), {"online": online, "registry": str(store.config.registry.path)})


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
    from genctr.champion import evaluate_against_champion

    result = evaluate_against_champion(build, candidate, registry_root, name, gate, out_dir)
    return StepResult(str(Path(out_dir) / "report.html"), result)


def register(candidate: str | Path, registry_root: str, name: str, metadata: dict[str, Any],
             set_champion: bool = False) -> StepResult:
    """Register ``candidate`` as the next version of ``name`` (and make it champion if asked)."""
    from genctr.registry import open_registry

    reg = open_registry(registry_root)
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
    from genctr.registry import open_registry

    reg = open_registry(registry_root)
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
        reg.set_canary(name, mv.version)  # the registry's @canary names the version being judged
        action = "start_canary"
    summary = {"action": action, "version": mv.version, "uri": mv.uri, "champion_uri": status.champion_uri,
               "canary_uri": status.canary_uri, "canary_percent": status.canary_percent, "urls": status.urls,
               "target": target.kind, "deployment": target.name}
    log.info("deploy %s v%d: %s", name, mv.version, summary)
    return StepResult(mv.uri, summary)
