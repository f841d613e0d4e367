"""What a registration logs to its MLflow run: the metadata's numbers as metrics, the rest as params."""
from __future__ import annotations

import math
import re
from typing import Any

from genctr.errors import describe

_PARAM_CHARS = 5_900  # MLflow keeps at most 6000 characters of a param value
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")  # MLflow's key alphabet


def run_record(metadata: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """MLflow params and metrics of a registration, from its metadata (nested keys joined by '.').

    Metrics: the finite numbers (the gate's candidate and champion AUC, LogLoss and gAUC, DeLong's
    statistics, the candidate's test metrics). Params: every other scalar (the gate's verdict and
    reason, its thresholds (anything under a ``config`` key), version numbers, the backbone,
    transfer and pretraining method, the pipeline run). Lists (the ROC curve's points) are left
    out; the whole metadata is in the version's manifest.
    """
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}

    def walk(prefix: str, value: Any, setting: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, setting or k == "config")
            return
        if isinstance(value, list):
            return
        key = _KEY_BAD.sub("_", prefix)[:250]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and not setting and not prefix.endswith("version"):
            if math.isfinite(value):
                metrics[key] = float(value)
        else:
            params[key] = describe(value if isinstance(value, str) else str(value), _PARAM_CHARS, raw=True)

    walk("", metadata, False)
    return params, metrics


__all__ = ["run_record"]
