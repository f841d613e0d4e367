"""The project's pipelines by name, their run-form parameters, and compiling them.

Two pipelines, picked by name with ``pipeline=`` (default ``"training"``): ``training``
(``pipelines/training_pipeline.py``) and ``canary`` (``pipelines/canary_pipeline.py``, one turn
of the canary loop). ``pipelines`` and ``components`` are installed with the project, beside
``genctr``; they (and kfp) are imported only when a function here is called.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from genctr.config import split_assignment
from genctr.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.placement import PlatformConfig

log = logging.getLogger(__name__)

# name -> (module, pipeline function in it)
PIPELINES = {"training": ("pipelines.training_pipeline", "training_pipeline"),
             "canary": ("pipelines.canary_pipeline", "canary_pipeline")}
PIPELINE_MODULE = PIPELINES["training"][0]

def module_name(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; choose one of {sorted(PIPELINES)}")
    return PIPELINES[pipeline][0]


def load_pipeline_module(pipeline: str = "training") -> ModuleType:
    """Import ``pipelines.<pipeline>_pipeline`` (installed with the project, beside ``genctr``)."""
    return importlib.import_module(module_name(pipeline))


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
    params = dict(split_assignment(pair, "param") for pair in pairs or [])
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
        if kfp_type == "Dict":  # a mapping (YAML/JSON), or its JSON text from `--param key={...}`
            value = json.loads(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"pipeline parameter {name} must be {kfp_type.lower()}, got {value!r}") from None
    return value


def compile_pipeline(out: str | Path, platform: PlatformConfig | None = None, pipeline: str = "training",
                     profile: str = "local") -> Path:
    """Compile a pipeline to YAML at ``out`` (placement from the environment by default; run-form
    defaults from ``profile``: genctr.orchestration.profiles)."""
    path = load_pipeline_module(pipeline).compile_pipeline(out, platform, profile)
    log.info("compiled the %s pipeline (%s profile) to %s", pipeline, profile, path)
    return path
