"""Run a pipeline: compile it, run it locally through kfp.local, submit or schedule it.

Two pipelines, picked by name with ``pipeline=`` (default ``"training"``): ``training``
(``pipelines/training_pipeline.py``) and ``canary`` (``pipelines/canary_pipeline.py``, one turn
of the canary loop). They live in the source checkout (``pipelines/``, ``components/`` beside
``src/``); this module imports them, and kfp, only when a function is called. ``run_local`` executes the
*same* pipeline function a cluster runs, with kfp.local's SubprocessRunner in the current
interpreter (no per-task venvs or pip installs: the project is installed here).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from genctr.errors import ConfigError, GenCTRError

if TYPE_CHECKING:
    from pipelines.placement import PlatformConfig

log = logging.getLogger(__name__)

# name -> (module, pipeline function in it)
PIPELINES = {"training": ("pipelines.training_pipeline", "training_pipeline"),
             "canary": ("pipelines.canary_pipeline", "canary_pipeline")}
PIPELINE_MODULE = PIPELINES["training"][0]
GX_TASKS = ("validate-events", "validate-samples")
# robfig/cron (what Kubeflow's scheduler uses), seconds first: sec min hour day-of-month month day-of-week
CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PipelineRunError(GenCTRError):
    """A pipeline run failed. ``failed_task`` names the step; ``report_path`` a GX report if one was written."""

    def __init__(self, message: str, failed_task: str | None = None, report_path: str | None = None,
                 run_dir: str | None = None) -> None:
        super().__init__(message)
        self.failed_task = failed_task
        self.report_path = report_path
        self.run_dir = run_dir


@dataclass
class LocalRun:
    """What a local run left under its run directory (``pipeline_root/<pipeline>-<timestamp>``)."""

    run_dir: Path
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> executor_output.json

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


def _module_name(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; choose one of {sorted(PIPELINES)}")
    return PIPELINES[pipeline][0]


def load_pipeline_module(pipeline: str = "training") -> ModuleType:
    """Import ``pipelines.<pipeline>_pipeline`` from the source checkout."""
    name = _module_name(pipeline)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("pipelines", "components", name):
            raise
    from genctr.paths import repo_root

    root = repo_root()
    if not (root / (name.replace(".", "/") + ".py")).is_file():
        raise ConfigError("the pipeline definitions (pipelines/, components/) were not found: "
                          "run genctr pipeline commands from a genctr source checkout")
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def pipeline_function(pipeline: str = "training") -> Any:
    """The pipeline's (default-placed) KFP GraphComponent, e.g. ``training_pipeline``."""
    return getattr(load_pipeline_module(pipeline), PIPELINES[pipeline][1])


def pipeline_parameters(pipeline: str = "training") -> dict[str, tuple[str, Any]]:
    """Every pipeline parameter: name -> (KFP type name, default)."""
    spec = pipeline_function(pipeline).component_spec
    return {name: (inp.type, inp.default) for name, inp in spec.inputs.items()}


def check_params(params: dict[str, Any] | None, pipeline: str = "training") -> dict[str, Any]:
    """Reject unknown parameter names and values of the wrong type; return a plain dict."""
    known = pipeline_parameters(pipeline)
    params = dict(params or {})
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {unknown} of the {pipeline} pipeline; "
                          f"known: {sorted(known)}")
    for name, value in params.items():
        params[name] = _coerce(name, known[name][0], value)
    return params


def parse_params(pairs: list[str] | None, pipeline: str = "training") -> dict[str, Any]:
    """``["key=value", ...]`` -> typed parameters (types from the pipeline's signature)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected key=value")
        params[key.strip()] = value
    return check_params(params, pipeline)


def _coerce(name: str, kfp_type: str, value: Any) -> Any:
    try:
        if kfp_type == "Boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if kfp_type == "Integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kfp_type == "Float":
            return float(value)
        if kfp_type == "String":
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"pipeline parameter {name} must be {kfp_type.lower()}, got {value!r}") from None
    return value


def compile_pipeline(out: str | Path, platform: PlatformConfig | None = None, pipeline: str = "training") -> Path:
    """Compile a pipeline to YAML at ``out`` (placement from the environment by default)."""
    path = load_pipeline_module(pipeline).compile_pipeline(out, platform)
    log.info("compiled the %s pipeline to %s", pipeline, path)
    return path


def _import_kfp_local() -> ModuleType:
    """``kfp.local``, guarded against the checkout's ``docker/`` directory.

    kfp.local imports the optional docker SDK and only tolerates an ImportError. With the
    repository root on ``sys.path`` (``python -m ...`` from the checkout), ``import docker``
    finds our Dockerfile directory as a namespace package instead, and kfp.local dies with an
    AttributeError. Blocking that name makes the import fail cleanly: only DockerRunner,
    which this project does not use, goes away.
    """
    loaded = sys.modules.get("docker", False)
    if loaded is False:
        spec = importlib.util.find_spec("docker")
        # not installed now, but the checkout may join sys.path later: block the name either way
        shadowed = spec is None or spec.origin in (None, "namespace")
    else:
        shadowed = loaded is not None and getattr(loaded, "__file__", None) is None
    if shadowed:
        sys.modules["docker"] = None  # type: ignore[assignment]
    from kfp import local

    return local


def run_local(params: dict[str, Any] | None, pipeline_root: str | Path, *, enable_caching: bool = False,
              pipeline: str = "training") -> LocalRun:
    """Run a pipeline here through kfp.local; raise PipelineRunError if a step fails.

    With ``enable_caching`` kfp.local reuses outputs of earlier identical tasks (kept under
    ``pipeline_root/.kfp_cache``); steps that read live state (gate, register, deploy, every
    canary step) always run. Leave it off when the data behind an unchanged ``data_path`` may
    have changed.
    """
    local = _import_kfp_local()
    params = check_params(params, pipeline)
    module = load_pipeline_module(pipeline)
    func = getattr(module, PIPELINES[pipeline][1])
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True,
               enable_caching=enable_caching)
    failure: str | None = None
    with warnings.catch_warnings():
        # kfp.local warns that resources/accelerators are ignored and that our images are not "python"
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"kfp\.")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\.")
        try:
            func(**params)
        except RuntimeError as exc:
            failure = _ANSI.sub("", str(exc))
    prefix = f"{module.PIPELINE_NAME}-"
    run_dirs = sorted(p for p in set(root.iterdir()) - before if p.is_dir() and p.name.startswith(prefix))
    if not run_dirs:
        raise PipelineRunError(failure or f"kfp.local left no run directory under {root}")
    run = LocalRun(run_dirs[-1], _task_outputs(run_dirs[-1]))
    if failure is not None:
        raise _run_error(failure, run)
    log.info("local run finished: %s", run.run_dir)
    return run


def _task_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    outputs = {}
    for f in sorted(run_dir.glob("*/executor_output.json")):
        outputs[f.parent.name] = json.loads(f.read_text())
    return outputs


def _run_error(message: str, run: LocalRun) -> PipelineRunError:
    m = re.search(r"Inner task failed: '?([A-Za-z0-9_-]+)", message)
    task = m.group(1) if m else None
    report = None
    if task in GX_TASKS:
        md = run.artifact_path(task, "report_md")
        html = run.artifact_path(task, "report_html")
        report = str(html if html.is_file() else md) if (html.is_file() or md.is_file()) else None
    text = f"pipeline step {task or '?'} failed (run directory {run.run_dir}); see its log above"
    if report:
        text += f"; data validation report: {report}"
    return PipelineRunError(text, failed_task=task, report_path=report, run_dir=str(run.run_dir))


def validate_cron(cron: str) -> str:
    """Check a Kubeflow (robfig/cron) expression: 6 fields, seconds first; return it normalised."""
    fields = cron.split()
    if len(fields) == 5:
        raise ConfigError(f"cron {cron!r} has 5 fields; Kubeflow Pipelines needs 6 with seconds first "
                          f"({' '.join(CRON_FIELDS)}): e.g. '0 {cron.strip()}'")
    if len(fields) != 6:
        raise ConfigError(f"cron {cron!r} has {len(fields)} fields; expected 6: {' '.join(CRON_FIELDS)} "
                          "(e.g. '0 0 3 * * *' = every day at 03:00)")
    for name, value in zip(CRON_FIELDS, fields):
        if not _CRON_FIELD.match(value):
            raise ConfigError(f"cron {cron!r}: the {name} field {value!r} is not a cron field")
    if "?" in fields[0] or "?" in fields[1]:
        raise ConfigError(f"cron {cron!r}: '?' is only allowed in the day-of-month and day-of-week fields")
    return " ".join(fields)


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    if not host:
        raise ConfigError("give the Kubeflow Pipelines host URL (--host)")
    return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def _package(tmp_dir: str, package: str | Path | None, platform: PlatformConfig | None, pipeline: str) -> str:
    """``package`` (checked to be a compile of ``pipeline``), or a fresh compile of it."""
    if package:
        if not Path(package).is_file():
            raise ConfigError(f"pipeline package {package} does not exist")
        _check_package(Path(package), pipeline)
        return str(package)
    return str(compile_pipeline(Path(tmp_dir) / f"{pipeline}_pipeline.yaml", platform, pipeline))


def _check_package(path: Path, pipeline: str) -> None:
    """The parameters are checked against ``pipeline``: the package must be that pipeline."""
    import yaml

    try:
        spec = next(yaml.safe_load_all(path.read_text()))
        name = spec["pipelineInfo"]["name"]
    except (yaml.YAMLError, StopIteration, KeyError, TypeError) as exc:
        raise ConfigError(f"pipeline package {path} is not a compiled KFP pipeline: {exc}") from None
    expected = load_pipeline_module(pipeline).PIPELINE_NAME
    if name != expected:
        raise ConfigError(f"pipeline package {path} is {name!r}, not the {pipeline} pipeline ({expected!r}); "
                          "pass the matching --pipeline")


def submit(host: str, params: dict[str, Any] | None, experiment: str = "genctr", *, run_name: str | None = None,
           namespace: str | None = None, enable_caching: bool | None = None, service_account: str | None = None,
           package: str | Path | None = None, platform: PlatformConfig | None = None,
           pipeline: str = "training") -> str:
    """Compile (or take ``package``) and start one run on Kubeflow Pipelines; return the run id."""
    import tempfile

    params = check_params(params, pipeline)
    client = _client(host, namespace)
    with tempfile.TemporaryDirectory() as tmp:
        result = client.create_run_from_pipeline_package(
            _package(tmp, package, platform, pipeline), arguments=params, run_name=run_name, experiment_name=experiment,
            namespace=namespace, enable_caching=enable_caching, service_account=service_account)
    log.info("submitted run %s to %s", result.run_id, host)
    return str(result.run_id)


def schedule(host: str, cron: str, params: dict[str, Any] | None, name: str, experiment: str = "genctr", *,
             namespace: str | None = None, enable_caching: bool | None = False, max_concurrency: int = 1,
             no_catchup: bool = True, service_account: str | None = None, package: str | Path | None = None,
             platform: PlatformConfig | None = None, pipeline: str = "training") -> str:
    """Create a recurring run (6-field cron, seconds first); return its id.

    Caching is off by default: a schedule exists to retrain on new data (or judge new logs)
    behind the same URI, which cached steps would never see.
    """
    import tempfile

    cron = validate_cron(cron)
    params = check_params(params, pipeline)
    if not name:
        raise ConfigError("a recurring run needs a name")
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    client = _client(host, namespace)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    with tempfile.TemporaryDirectory() as tmp:
        job = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, params=params,
            pipeline_package_path=_package(tmp, package, platform, pipeline), max_concurrency=max_concurrency,
            no_catchup=no_catchup, enable_caching=enable_caching, service_account=service_account)
    log.info("scheduled %s (%s pipeline, %s) on %s", name, pipeline, cron, host)
    return str(job.recurring_run_id)


SCHEDULE_KEYS = {"name", "cron", "experiment", "params", "max_concurrency", "no_catchup", "enable_caching",
                 "service_account", "pipeline"}


def load_schedule_file(path: str | Path, pipeline: str | None = None) -> dict[str, Any]:
    """Read a recurring-run definition (``manifests/recurring-run*.yaml``): the ``schedule`` arguments.

    The file may name its pipeline (``pipeline: canary``); ``pipeline`` given here must agree
    with it. Default: training. The returned dict carries the resolved ``pipeline``.
    """
    from genctr.config import load_file

    spec = load_file(path)
    unknown = sorted(set(spec) - SCHEDULE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(SCHEDULE_KEYS)}")
    if "cron" not in spec or "name" not in spec:
        raise ConfigError(f"{path}: a recurring run needs 'name' and 'cron'")
    in_file = spec.get("pipeline")
    if in_file is not None and pipeline is not None and in_file != pipeline:
        raise ConfigError(f"{path} defines a recurring run of the {in_file} pipeline, not {pipeline}")
    spec["pipeline"] = str(in_file or pipeline or "training")
    _module_name(spec["pipeline"])
    spec["cron"] = validate_cron(str(spec["cron"]))
    spec["params"] = check_params(spec.get("params") or {}, spec["pipeline"])
    return spec


__all__ = ["PIPELINES", "LocalRun", "PipelineRunError", "check_params", "compile_pipeline", "load_pipeline_module",
           "load_schedule_file", "parse_params", "pipeline_function", "pipeline_parameters", "run_local", "schedule",
           "submit", "validate_cron"]
