"""Submit or schedule a pipeline on a Kubeflow Pipelines host (``kfp.Client``).

How to reach and authenticate to the host is a :class:`~genctr.orchestration.connection.KFPConnection`;
every call to the API runs inside ``talking_to``, so an unreachable or refusing host is one line.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.errors import ConfigError
from genctr.orchestration.catalog import check_params, compile_pipeline, load_pipeline_module, module_name
from genctr.orchestration.connection import KFPConnection, as_connection, connect, talking_to

if TYPE_CHECKING:
    from pipelines.placement import PlatformConfig

log = logging.getLogger(__name__)

# robfig/cron (what Kubeflow's scheduler uses), seconds first: sec min hour day-of-month month day-of-week
CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def validate_cron(cron: str) -> str:
    """Check a Kubeflow (robfig/cron) expression: 6 fields, seconds first; return it normalised."""
    fields = cron.split()
    if len(fields) == 5:
        raise ConfigError(f"cron {cron!r} has 5 fields; Kubeflow Pipelines needs 6 with seconds first "
                          f"({' '.join(CRON_FIELDS)}): e.g. '0 {cron.strip()}'")
    if len(fields) != 6:
        raise ConfigError(f"cron {cron!r} has {len(fields)} fields; expected 6: {' '.join(CRON_FIELDS)} "
                          "(e.g. '0 0 3 * * *' = every day at 03:00)")
    for name, value in zip(CRON_FIELDS, fields, strict=True):
        if not _CRON_FIELD.match(value):
            raise ConfigError(f"cron {cron!r}: the {name} field {value!r} is not a cron field")
    if "?" in fields[0] or "?" in fields[1]:
        raise ConfigError(f"cron {cron!r}: '?' is only allowed in the day-of-month and day-of-week fields")
    return " ".join(fields)


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


def submit(host: str | KFPConnection, params: dict[str, Any] | None, experiment: str = "genctr", *,
           run_name: str | None = None, namespace: str | None = None, enable_caching: bool | None = None,
           service_account: str | None = None, package: str | Path | None = None,
           platform: PlatformConfig | None = None, pipeline: str = "training") -> str:
    """Compile (or take ``package``) and start one run on Kubeflow Pipelines; return the run id.

    ``host`` is the API URL or a :class:`KFPConnection` (credentials, namespace).
    """
    import tempfile

    conn = as_connection(host, namespace)
    params = check_params(params, pipeline)
    with talking_to(conn, "connect"):
        client = connect(conn)  # before compiling: an unreachable host fails at once
    with tempfile.TemporaryDirectory() as tmp:
        path = _package(tmp, package, platform, pipeline)
        with talking_to(conn, "create a run"):
            result = client.create_run_from_pipeline_package(
                path, arguments=params, run_name=run_name, experiment_name=experiment, namespace=conn.namespace,
                enable_caching=enable_caching, service_account=service_account)
    log.info("submitted run %s to %s", result.run_id, conn.host)
    return str(result.run_id)


def default_schedule_name(pipeline: str = "training") -> str:
    """The recurring run's name when none is given: the pipeline's own name, e.g. ``genctr-training-recurring``."""
    return f"{load_pipeline_module(pipeline).PIPELINE_NAME}-recurring"


def schedule(host: str | KFPConnection, cron: str, params: dict[str, Any] | None, name: str | None = None,
             experiment: str = "genctr", *, namespace: str | None = None, enable_caching: bool | None = False,
             max_concurrency: int = 1, no_catchup: bool = True, service_account: str | None = None,
             package: str | Path | None = None, platform: PlatformConfig | None = None,
             pipeline: str = "training") -> str:
    """Create a recurring run (6-field cron, seconds first); return its id.

    ``name`` defaults to :func:`default_schedule_name`. Caching is off by default: a schedule
    exists to retrain on new data (or judge new logs) behind the same URI, which cached steps
    would never see.
    """
    import tempfile

    conn = as_connection(host, namespace)
    cron = validate_cron(cron)
    params = check_params(params, pipeline)
    name = name or default_schedule_name(pipeline)
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    with talking_to(conn, "connect"):
        client = connect(conn)  # before compiling: an unreachable host fails at once
    with tempfile.TemporaryDirectory() as tmp:
        path = _package(tmp, package, platform, pipeline)
        with talking_to(conn, "create a recurring run"):
            experiment_id = client.create_experiment(experiment, namespace=conn.namespace).experiment_id
            job = client.create_recurring_run(
                experiment_id=experiment_id, job_name=name, cron_expression=cron, params=params,
                pipeline_package_path=path, max_concurrency=max_concurrency, no_catchup=no_catchup,
                enable_caching=enable_caching, service_account=service_account)
    log.info("scheduled %s (%s pipeline, %s) on %s", name, pipeline, cron, conn.host)
    return str(job.recurring_run_id)


SCHEDULE_KEYS = {"name", "cron", "experiment", "params", "max_concurrency", "no_catchup", "enable_caching",
                 "service_account", "pipeline"}


def load_schedule_file(path: str | Path, pipeline: str | None = None) -> dict[str, Any]:
    """Read a recurring-run definition (``manifests/recurring-run*.yaml``): the ``schedule`` arguments.

    The file may name its pipeline (``pipeline: canary``); ``pipeline`` given here must agree
    with it. Default: training. The returned dict carries the resolved ``pipeline``. A file
    without ``name`` gets :func:`default_schedule_name`.
    """
    from genctr.config import load_file

    spec = load_file(path)
    unknown = sorted(set(spec) - SCHEDULE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(SCHEDULE_KEYS)}")
    if "cron" not in spec:
        raise ConfigError(f"{path}: a recurring run needs 'cron' (6 fields, seconds first)")
    in_file = spec.get("pipeline")
    if in_file is not None and pipeline is not None and in_file != pipeline:
        raise ConfigError(f"{path} defines a recurring run of the {in_file} pipeline, not {pipeline}")
    spec["pipeline"] = str(in_file or pipeline or "training")
    module_name(spec["pipeline"])
    spec["cron"] = validate_cron(str(spec["cron"]))
    spec["name"] = str(spec.get("name") or default_schedule_name(spec["pipeline"]))
    spec["params"] = check_params(spec.get("params") or {}, spec["pipeline"])
    return spec

