"""Which registry backend a URI names, and opening it.

==================================================  =====================================================
URI                                                 backend
==================================================  =====================================================
``/path``, ``file://``, ``s3://``, ``gs://``, ...   :class:`~genctr.registry.fsspec_store.FsspecRegistry`
``mlflow+http://HOST:PORT[/PREFIX][?OPTIONS]``      :class:`~genctr.registry.mlflow_store.MlflowRegistry`
``mlflow+https://...``                              the same over TLS
``kubeflow-mr://HOST:PORT?storage=URI[&...]``       :class:`~genctr.registry.kubeflow_store.KubeflowRegistry`
``kubeflow-mr+https://HOST:PORT?storage=URI``       the same over TLS (bearer token, see that module)
==================================================  =====================================================

A CLI flag or a pipeline parameter carries one string, so the MLflow and Kubeflow backends take
their options as a query string too (``?experiment=genctr&artifacts_destination=s3://b/mlflow``);
keyword options given to :func:`open_registry` win over the query's. An unknown option is a
ConfigError naming the ones the backend takes.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from genctr.errors import ConfigError, describe

if TYPE_CHECKING:
    from genctr.registry.base import ModelRegistry

MLFLOW_SCHEMES = ("mlflow+http", "mlflow+https")
KUBEFLOW_SCHEMES = ("kubeflow-mr", "kubeflow-mr+http", "kubeflow-mr+https")
URI_HELP = ("a path or fsspec URI (s3://, gs://, ...), mlflow+http(s)://HOST:PORT (MLflow Model Registry) "
            "or kubeflow-mr://HOST:PORT?storage=URI (Kubeflow Model Registry)")


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def backend_for(uri: str | os.PathLike[str]) -> type[ModelRegistry]:
    """The registry class that serves ``uri`` (imported only when chosen: each has its own client)."""
    text = os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text:
        raise ConfigError(f"registry URI must be a non-empty string: {URI_HELP}; got {describe(uri)}")
    scheme = scheme_of(text)
    if scheme in MLFLOW_SCHEMES:
        from genctr.registry.mlflow_store import MlflowRegistry

        return MlflowRegistry
    if scheme in KUBEFLOW_SCHEMES:
        from genctr.registry.kubeflow_store import KubeflowRegistry

        return KubeflowRegistry
    if scheme.startswith(("mlflow", "kubeflow")):
        raise ConfigError(f"registry URI {describe(text)}: unknown scheme {scheme!r}; use {URI_HELP}")
    from genctr.registry.fsspec_store import FsspecRegistry

    return FsspecRegistry


def open_registry(uri: str | os.PathLike[str], **options: Any) -> ModelRegistry:
    """The registry at ``uri`` (forms in the module docstring); ``options`` go to its backend."""
    return backend_for(uri)(os.fspath(uri), **options)


def split_options(uri: str, allowed: tuple[str, ...], given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``uri`` without its query string, and the query's options updated with ``given``.

    ConfigError names any option not in ``allowed``.
    """
    parts = urlsplit(uri)
    options: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    options.update({k: v for k, v in given.items() if v is not None})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"registry URI {describe(uri)}: unknown option(s) {unknown}; "
                          f"{scheme_of(uri)} takes {list(allowed)}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), options


__all__ = ["URI_HELP", "backend_for", "open_registry", "split_options"]
