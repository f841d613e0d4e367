"""Run a pipeline here through kfp.local: the *same* pipeline function a cluster runs.

kfp.local's SubprocessRunner executes each step in the current interpreter (no per-task venvs or
pip installs: the project is installed here). Everything kfp.local prints (its task banners and
every step's own output, which it copies to stdout) goes to one executor log file instead
(default ``pipeline_root/logs/<pipeline>-<time>.log``, logged when the run starts), so a run's
stdout stays the caller's. What a run left behind is a :class:`LocalRun`; a failed run is a
:class:`PipelineRunError` naming the step, the error it printed, and the log.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genctr.errors import GenCTRError
from genctr.orchestration.catalog import PIPELINES, check_params, load_pipeline_module

log = logging.getLogger(__name__)

GX_TASKS = ("validate-events", "validate-samples")


class PipelineRunError(GenCTRError):
    """A pipeline run failed. ``failed_task`` names the step; ``report_path`` a GX report if one was written."""

    def __init__(self, message: str, failed_task: str | None = None, report_path: str | None = None,
                 run_dir: str | None = None, log_path: str | None = None) -> None:
        super().__init__(message)
        self.failed_task = failed_task
        self.report_path = report_path
        self.run_dir = run_dir
        self.log_path = log_path


@dataclass
class LocalRun:
    """What a local run left under its run directory (``pipeline_root/<pipeline>-<timestamp>``)."""

    run_dir: Path
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> executor_output.json
    log_path: Path | None = None  # kfp.local's output for the whole run (every step's logs)

    def task_dir(self, task: str) -> Path:
        return self.run_dir / task

    def artifact_path(self, task: str, name: str) -> Path:
        return self.task_dir(task) / name

    @property
    def decision(self) -> dict[str, Any] | None:
        """The gate's decision.json, or None if the gate did not run."""
        path = self.artifact_path("evaluate-and-gate", "decision")
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def gate_report(self) -> Path | None:
        path = self.artifact_path("evaluate-and-gate", "report")
        return path if path.is_file() else None

    @property
    def registered_version(self) -> str | None:
        """The registered version, or None when the gate failed (register skipped)."""
        out = self.outputs.get("register-model", {}).get("parameterValues", {})
        return None if "Output" not in out else str(out["Output"])

    @property
    def deployment(self) -> dict[str, Any] | None:
        """The deploy step's summary (action, version, URLs), or None when it did not run."""
        out = self.outputs.get("deploy-model", {}).get("parameterValues", {})
        return json.loads(out["Output"]) if "Output" in out else None

    # -- canary pipeline -------------------------------------------------------------------

    @property
    def canary_action(self) -> str | None:
        """The canary analysis' action (promote | rollback | continue), or None if it did not run."""
        out = self.outputs.get("analyze-canary", {}).get("parameterValues", {})
        return str(out["Output"]) if "Output" in out else None

    @property
    def canary_decision(self) -> dict[str, Any] | None:
        """The analysis' decision.json (action, reasons, numbers, analysis, URIs, policy, drift)."""
        path = self.artifact_path("analyze-canary", "analysis") / "decision.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def canary_report(self) -> Path | None:
        path = self.artifact_path("analyze-canary", "report")
        return path if path.is_file() else None

    @property
    def canary_acted(self) -> dict[str, Any] | None:
        """The act step's summary (action, acted, dry_run, URIs, registry champion), or None when
        it did not run (the decision was ``continue``)."""
        out = self.outputs.get("act-on-canary", {}).get("parameterValues", {})
        return json.loads(out["Output"]) if "Output" in out else None


@contextlib.contextmanager
def _root_logs_to(stream: Any) -> Iterator[None]:
    """While a run lasts, records of the root logger (kfp.local logs through it) go to ``stream`` only."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved


def default_log_path(pipeline_root: str | Path, pipeline: str = "training") -> Path:
    """``pipeline_root/logs/<pipeline>-<YYYYmmdd-HHMMSS>-<ms>.log``: a fresh name per run."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    return Path(pipeline_root).resolve() / "logs" / f"{pipeline}-{stamp}.log"


def run_local(params: dict[str, Any] | None, pipeline_root: str | Path, *, enable_caching: bool = False,
              pipeline: str = "training", profile: str = "local", log_file: str | Path | None = None) -> LocalRun:
    """Run a pipeline here through kfp.local; raise PipelineRunError if a step fails.

    With ``enable_caching`` kfp.local reuses outputs of earlier identical tasks (kept under
    ``pipeline_root/.kfp_cache``); steps that read live state (gate, register, deploy, every
    canary step) always run. Leave it off when the data behind an unchanged ``data_path`` may
    have changed. ``profile`` picks the run form's defaults (genctr.orchestration.profiles), as
    ``genctr pipeline compile --profile`` does for a cluster. kfp.local's output goes to
    ``log_file`` (appended; default :func:`default_log_path`), not to stdout.
    """
    from kfp import local

    params = check_params(params, pipeline)
    module = load_pipeline_module(pipeline)
    func = getattr(module, PIPELINES[pipeline][1]) if profile == "local" else module.build_pipeline(profile=profile)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    log_path = Path(log_file).resolve() if log_file else default_log_path(root, pipeline)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True,
               enable_caching=enable_caching)
    failed = False
    log.info("%s pipeline: kfp.local output goes to %s", pipeline, log_path)
    # kfp.local prints its banners and copies every step's output with print() and a logging handler
    # on sys.stdout, both looked up at call time, and logs its scheduling through the root logger:
    # redirecting sys.stdout and the root logger's handlers sends all of it to the file
    with open(log_path, "a", encoding="utf-8", buffering=1) as sink, contextlib.redirect_stdout(sink), \
            _root_logs_to(sink), warnings.catch_warnings():
        # kfp.local warns that resources/accelerators are ignored and that our images are not "python"
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"kfp\.")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\.")
        try:
            func(**params)
        except RuntimeError:  # kfp.local's failure signal (raise_on_error=True); the run dir says which step
            failed = True
    prefix = f"{module.PIPELINE_NAME}-"
    run_dirs = sorted(p for p in set(root.iterdir()) - before if p.is_dir() and p.name.startswith(prefix))
    if not run_dirs:
        raise PipelineRunError(f"kfp.local left no run directory under {root}; see its log {log_path}",
                               log_path=str(log_path))
    run = LocalRun(run_dirs[-1], _task_outputs(run_dirs[-1]), log_path)
    if failed:
        raise _run_error(run)
    log.info("local run finished: %s", run.run_dir)
    return run


def _task_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    outputs = {}
    for f in sorted(run_dir.glob("*/executor_output.json")):
        outputs[f.parent.name] = json.loads(f.read_text())
    return outputs


def failed_tasks(run_dir: Path) -> list[str]:
    """The steps that started and did not finish: kfp.local makes a task's directory when the task
    starts (its output artifacts and executor output live there) and writes
    ``executor_output.json`` only when the task succeeds; skipped steps have no directory."""
    return sorted(p.name for p in run_dir.iterdir() if p.is_dir() and not (p / "executor_output.json").is_file())


# the last line of a Python traceback: "genctr.errors.DataValidationError: clicks log lacks ..."
_ERROR_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.+)$")


def last_error(log_path: Path | None) -> str | None:
    """``ErrorType: message`` of the last traceback in ``log_path`` (what the failed step raised)."""
    if log_path is None or not log_path.is_file():
        return None
    found = None
    with log_path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = _ERROR_LINE.match(line.rstrip("\n"))
            if match:
                found = f"{match.group(1)}: {match.group(2).strip()}"
    return found


def _run_error(run: LocalRun) -> PipelineRunError:
    failed = failed_tasks(run.run_dir)
    task = failed[0] if len(failed) == 1 else None
    report = None
    if task in GX_TASKS:
        md = run.artifact_path(task, "report_md")
        html = run.artifact_path(task, "report_html")
        report = str(html if html.is_file() else md) if (html.is_file() or md.is_file()) else None
    cause = last_error(run.log_path)
    text = f"pipeline step {task or '?'} failed" + (f": {cause}" if cause else "")
    text += f" (run directory {run.run_dir}; its log: {run.log_path})"
    if report:
        text += f"; data validation report: {report}"
    return PipelineRunError(text, failed_task=task, report_path=report, run_dir=str(run.run_dir),
                            log_path=str(run.log_path) if run.log_path else None)
