"""Versioned model store with atomic champion and canary aliases, on three backends.

``open_registry(uri)`` (or ``ModelRegistry(uri)``) picks the backend by URI
(:mod:`genctr.registry.factory`): a local path or fsspec URI is the fsspec store
(:mod:`~genctr.registry.fsspec_store`, the laptop default), ``mlflow+http(s)://HOST:PORT`` an
MLflow Model Registry (:mod:`~genctr.registry.mlflow_store`), ``kubeflow-mr://HOST:PORT`` a
Kubeflow Model Registry (:mod:`~genctr.registry.kubeflow_store`). The interface and the
promises every backend keeps are in :mod:`~genctr.registry.base`.
"""
from genctr.registry.base import (
    ALIASES,
    CANARY,
    CHAMPION,
    COMPLETE,
    REQUIRED_FILES,
    ModelRegistry,
    ModelVersion,
    check_model_dir,
)
from genctr.registry.factory import URI_HELP, backend_for, open_registry
from genctr.registry.fsspec_store import FsspecRegistry

__all__ = ["ALIASES", "CANARY", "CHAMPION", "COMPLETE", "REQUIRED_FILES", "URI_HELP", "FsspecRegistry",
           "ModelRegistry", "ModelVersion", "backend_for", "check_model_dir", "open_registry"]
