"""Kubeflow Pipelines components: typed interface + docstring + a short body calling ``genctr``.

Each component's body imports ``genctr`` inside the function (the code is shipped to the
pod as source; the image has the project installed) and calls one ``genctr.workflow``
step. Nothing is pip-installed per task: ``packages_to_install=[]`` and the image's own
kfp runs the executor (locally, the project installed in the current venv).
"""
from components.canary import act_on_canary, analyze_canary, collect_logs
from components.data import build_features, ingest_events, materialize_features, validate_events, validate_samples
from components.deploy import deploy_model
from components.gate import evaluate_and_gate
from components.registry import register_model
from components.storage import resolve_storage
from components.training import finetune, pretrain

__all__ = ["act_on_canary", "analyze_canary", "build_features", "collect_logs", "deploy_model", "evaluate_and_gate",
           "finetune", "ingest_events", "materialize_features", "pretrain", "register_model", "resolve_storage",
           "validate_events", "validate_samples"]
