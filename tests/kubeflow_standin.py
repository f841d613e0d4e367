"""A recording stand-in of ``model_registry.ModelRegistry``, the Kubeflow Model Registry client.

No Kubeflow Model Registry server can run here, so ``genctr.registry.kubeflow_store`` is tested
against this class: the client's method names and parameters (``tests/test_registry_kubeflow.py``
checks them against the real client with ``inspect.signature``), the real ``model_registry.types``
objects, state in memory, every call recorded in ``calls``. It behaves like the server where
genctr relies on it: a version name is unique per model (a duplicate is refused with the
client's ``StoreError``), ids are assigned on creation, objects handed out are copies that change
only through ``update``, and ``get_model_version`` / ``get_model_versions`` /
``get_model_artifact`` raise ``StoreError`` for a model (or version) that does not exist, as
the real client does.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

from model_registry.exceptions import StoreError
from model_registry.types import ModelArtifact, ModelVersion, RegisteredModel, SupportedTypes

# the client methods genctr calls; the contract test compares each with the real client's
METHODS = ("register_model", "update", "get_registered_model", "get_model_version", "get_model_artifact",
           "get_registered_models", "get_model_versions")


class RecordingModelRegistry:
    """In-memory Kubeflow Model Registry client; ``calls`` lists ``(method, args, kwargs)``."""

    def __init__(self, author: str = "genctr-tests") -> None:
        self.author = author
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._models: dict[str, RegisteredModel] = {}
        self._versions: dict[str, dict[str, ModelVersion]] = {}  # model name -> version name -> version
        self._artifacts: dict[str, ModelArtifact] = {}  # model version id -> its artifact
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the server serialises writes

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for m, a, k in self.calls if m == method]

    # ------------------------------------------------------------------ the client's methods
    def register_model(
        self,
        name: str,
        uri: str,
        *,
        model_format_name: str,
        model_format_version: str,
        version: str,
        storage_key: str | None = None,
        storage_path: str | None = None,
        service_account_name: str | None = None,
        model_source_kind: str | None = None,
        model_source_class: str | None = None,
        model_source_group: str | None = None,
        model_source_id: str | None = None,
        model_source_name: str | None = None,
        author: str | None = None,
        owner: str | None = None,
        version_description: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, SupportedTypes] | None = None,
    ) -> RegisteredModel:
        self._record("register_model", name, uri, model_format_name=model_format_name,
                     model_format_version=model_format_version, version=version,
                     version_description=version_description, metadata=dict(metadata or {}))
        with self._lock:
            rm = self._models.get(name)
            if rm is None:
                rm = RegisteredModel(name=name, owner=owner or self.author, id=str(next(self._ids)))
                self._models[name] = rm
                self._versions[name] = {}
            if version in self._versions[name]:
                raise StoreError(f"Version {version} already exists")
            mv = ModelVersion(name=version, author=author or self.author, description=version_description,
                              custom_properties=dict(metadata or {}), id=str(next(self._ids)),
                              registered_model_id=rm.id)
            self._versions[name][version] = mv
            self._artifacts[str(mv.id)] = ModelArtifact(
                name=name, uri=uri, model_format_name=model_format_name, model_format_version=model_format_version,
                storage_key=storage_key, storage_path=storage_path, service_account_name=service_account_name,
                id=str(next(self._ids)))
            return rm.model_copy(deep=True)

    def update(self, model: Any) -> Any:
        self._record("update", model.model_copy(deep=True))
        if not model.id:
            raise StoreError("Model must have an ID")
        with self._lock:
            if isinstance(model, RegisteredModel):
                self._models[model.name] = model.model_copy(deep=True)
            elif isinstance(model, ModelVersion):
                for versions in self._versions.values():
                    for key, mv in versions.items():
                        if mv.id == model.id:
                            versions[key] = model.model_copy(deep=True)
                            return model
                raise StoreError(f"no model version with id {model.id}")
            else:
                raise StoreError(f"cannot update a {type(model).__name__} here")
        return model

    def get_registered_model(self, name: str) -> RegisteredModel | None:
        self._record("get_registered_model", name)
        rm = self._models.get(name)
        return None if rm is None else rm.model_copy(deep=True)

    def get_model_version(self, name: str, version: str) -> ModelVersion | None:
        self._record("get_model_version", name, version)
        if name not in self._models:
            raise StoreError(f"Model {name} does not exist")
        mv = self._versions[name].get(version)
        return None if mv is None else mv.model_copy(deep=True)

    def get_model_artifact(self, name: str, version: str) -> ModelArtifact | None:
        self._record("get_model_artifact", name, version)
        mv = self._versions.get(name, {}).get(version) if name in self._models else None
        if mv is None:
            raise StoreError(f"Version {version} does not exist")
        artifact = self._artifacts.get(str(mv.id))
        return None if artifact is None else artifact.model_copy(deep=True)

    def get_registered_models(self) -> list[RegisteredModel]:  # the real client returns an iterable Pager
        self._record("get_registered_models")
        return [rm.model_copy(deep=True) for rm in self._models.values()]

    def get_model_versions(self, name: str) -> list[ModelVersion]:  # likewise a Pager[ModelVersion]
        self._record("get_model_versions", name)
        if name not in self._models:
            raise StoreError(f"Model {name} does not exist")
        return [mv.model_copy(deep=True) for mv in self._versions[name].values()]
