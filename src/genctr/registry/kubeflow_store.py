"""The registry on Kubeflow Model Registry: ``kubeflow-mr://HOST:PORT?storage=URI``.

Kubeflow Model Registry keeps metadata only: a model's files must already be in storage that
KServe reads. So ``register`` first copies the model directory to
``<storage>/<name>/<id>/model/`` (any fsspec URI: ``s3://bucket/models``, the bucket the
InferenceService's storage secret opens) with ``manifest.json`` (file hashes, metadata) beside
it, and then records it through the ``model-registry`` client::

    RegisteredModel <name>   custom properties genctr_champion and genctr_canary (a version
                             number; 0 = none) and genctr_history_<ns>-<id> (one JSON object
                             per champion move)
    ModelVersion "<v>"       custom properties genctr_manifest (the manifest's URI) and, written
                             LAST, genctr_complete (the content hash)
    ModelArtifact            uri: <storage>/<name>/<id>/model, KServe's storageUri;
                             model_format_name "genctr", model_format_version the artifact format

A version without ``genctr_complete`` is incomplete: not listed, not fetched, never aliased.
An alias move is one update of the RegisteredModel (alias and history entry together). Version
numbers are chosen by the client (the next after the highest); the server refuses a duplicate
version name, so a number taken meanwhile is skipped. The registry cannot delete:
``purge_incomplete`` archives an incomplete version (state ARCHIVED) and deletes its files;
numbers are never reused.

``kubeflow-mr://HOST:PORT`` is plain HTTP (the in-cluster service, e.g.
``model-registry-service.kubeflow:8080``); ``kubeflow-mr+https://HOST:PORT`` is TLS with a bearer
token the client reads itself (``KF_PIPELINES_SA_TOKEN_PATH``: a pod's service-account token).
Options (keywords or the query string): ``storage`` (required) and ``author``; keyword-only:
``storage_options`` for fsspec and ``client`` (an already-built ``model_registry.ModelRegistry``).
"""
from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from genctr.artifacts.files import FORMAT
from genctr.errors import ArtifactError, ConfigError, describe
from genctr.registry.base import (
    CHAMPION,
    ModelRegistry,
    ModelVersion,
    check_name,
    content_hash,
    manifest_files,
    now,
)
from genctr.registry.factory import KUBEFLOW_SCHEMES, scheme_of, split_options

log = logging.getLogger(__name__)

MANIFEST_PROP = "genctr_manifest"
COMPLETE_PROP = "genctr_complete"
HISTORY_PREFIX = "genctr_history_"
MODEL_FORMAT = "genctr"
_NONE = 0  # an alias property's value when it points nowhere


def alias_property(alias: str) -> str:
    return f"genctr_{alias}"


class KubeflowRegistry(ModelRegistry):
    """Versioned model store: files in fsspec ``storage``, records in Kubeflow Model Registry."""

    OPTIONS = ("storage", "author")

    def __init__(self, uri: str, *, storage: str | None = None, author: str | None = None,
                 storage_options: dict[str, Any] | None = None, client: Any = None) -> None:
        base, opts = split_options(uri, self.OPTIONS, {"storage": storage, "author": author})
        parts = urlsplit(base)
        if scheme_of(base) not in KUBEFLOW_SCHEMES or not parts.hostname:
            raise ConfigError(f"Kubeflow Model Registry URI {describe(uri)} must look like "
                              "kubeflow-mr://HOST:PORT?storage=s3://bucket/models")
        if not opts.get("storage"):
            raise ConfigError(f"Kubeflow Model Registry URI {describe(uri)} needs storage=URI: where the model files "
                              "go (the registry stores metadata only), e.g. ?storage=s3://bucket/models")
        self.uri = uri
        self.fs, path = fsspec.core.url_to_fs(str(opts["storage"]), **(storage_options or {}))
        self.storage_root = path.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)
        self.client = client if client is not None else _connect(parts, opts.get("author") or "genctr")
        self._manifests: dict[tuple[str, str], dict[str, Any]] = {}  # immutable once complete

    # ------------------------------------------------------------------ writing
    def _register(self, src_fs: fsspec.AbstractFileSystem, src: str, name: str, metadata: dict[str, Any]) -> int:
        base = f"{self.storage_root}/{name}/{uuid.uuid4().hex}"
        version = None
        try:
            files = self._copy_tree(src_fs, src, self.fs, f"{base}/model")
            sha = content_hash(files)
            manifest = {"name": name, "sha256": sha, "files": files, "metadata": metadata, "registered_at": now()}
            self.fs.pipe_file(f"{base}/manifest.json", json.dumps(manifest, sort_keys=True).encode())
            version = self._create_version(name, self._uri(f"{base}/model"), self._uri(f"{base}/manifest.json"))
            self._write_marker(name, version, sha)  # last: the version is usable from here on
        except BaseException:
            self._discard(name, version, base)
            raise
        log.info("registered %s version %d in Kubeflow Model Registry (%s)", name, version, self._uri(base))
        return version

    def _create_version(self, name: str, model_uri: str, manifest_uri: str) -> int:
        """Record the next free version number of ``name``; one taken meanwhile is skipped."""
        from model_registry.exceptions import StoreError

        for _ in range(1000):
            version = max(self._all_versions(name), default=0) + 1
            try:
                self.client.register_model(name, model_uri, model_format_name=MODEL_FORMAT,
                                           model_format_version=str(FORMAT), version=str(version),
                                           version_description=f"genctr model directory ({model_uri})",
                                           metadata={MANIFEST_PROP: manifest_uri})
                return version
            except StoreError:
                if self._model_version(name, version) is None:  # not a lost race: a real failure
                    raise
        raise ArtifactError(f"could not find a free version number for {name!r}")

    def _write_marker(self, *args: Any) -> None:
        name, version, sha = args
        mv = self._model_version(name, version)
        if mv is None:
            raise ArtifactError(f"model {name!r} version {version} vanished before it was completed")
        mv.custom_properties = {**(mv.custom_properties or {}), COMPLETE_PROP: sha}
        self.client.update(mv)

    def _move_champion(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        key = f"{HISTORY_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._update_model(mv.name, {alias_property(CHAMPION): mv.version, key: json.dumps(entry, sort_keys=True)})

    def _set_alias(self, name: str, alias: str, mv: ModelVersion | None) -> None:
        self._update_model(name, {alias_property(alias): _NONE if mv is None else mv.version})

    def purge_incomplete(self, name: str) -> list[str]:
        """Archive incomplete versions and delete their files and any unregistered copies; return the copies.

        Only run when no ``register`` of ``name`` is in progress: its work looks incomplete.
        """
        from model_registry.types import ModelVersionState

        check_name(name)
        removed: list[str] = []
        keep = set()
        for mv in self._versions(name):
            props = dict(mv.custom_properties or {})
            base = posixpath.dirname(self._path(str(props.get(MANIFEST_PROP, ""))))
            if mv.state == ModelVersionState.LIVE and COMPLETE_PROP not in props:
                mv.state = ModelVersionState.ARCHIVED
                self.client.update(mv)
                self._remove(base, removed)
            else:
                keep.add(base)
        root = f"{self.storage_root}/{name}"
        if self.fs.exists(root):
            for path in self.fs.ls(root, detail=False):
                if path.rstrip("/") not in keep:
                    self._remove(path.rstrip("/"), removed)
        return removed

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.get_registered_models())

    def list_versions(self, name: str) -> list[int]:
        check_name(name)
        from model_registry.types import ModelVersionState

        return sorted(int(mv.name) for mv in self._versions(name) if mv.name.isdigit()
                      and mv.state == ModelVersionState.LIVE and COMPLETE_PROP in (mv.custom_properties or {}))

    def _get(self, name: str, version: int) -> ModelVersion:
        from model_registry.types import ModelVersionState

        mv = self._model_version(name, version)
        if mv is None or mv.state != ModelVersionState.LIVE:
            state = "does not exist" if mv is None else f"is {mv.state.value.lower()}"
            raise ArtifactError(f"model {name!r} version {version} {state} in Kubeflow Model Registry")
        props = dict(mv.custom_properties or {})
        sha = props.get(COMPLETE_PROP)
        if not sha:
            raise ArtifactError(f"model {name!r} version {version} is incomplete (no {COMPLETE_PROP} property): "
                                "its registration did not finish")
        artifact = self.client.get_model_artifact(name, str(version))
        if artifact is None or not artifact.uri:
            raise ArtifactError(f"model {name!r} version {version} has no model artifact URI")
        where = f"model {name!r} version {version}"
        manifest = self._manifest(where, str(props.get(MANIFEST_PROP, "")), str(sha))
        return ModelVersion(name=name, version=version, path=self._path(artifact.uri), uri=artifact.uri,
                            sha256=str(sha), files=manifest_files(manifest, where),
                            metadata=manifest.get("metadata", {}), registered_at=manifest.get("registered_at", ""))

    @contextmanager
    def _files(self, mv: ModelVersion) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
        yield self.fs, mv.path  # read in place, in storage

    def _alias(self, name: str, alias: str) -> int | None:
        model = self.client.get_registered_model(name)
        value = None if model is None else (model.custom_properties or {}).get(alias_property(alias))
        return int(value) if value not in (None, _NONE, "") else None

    def history(self, name: str) -> list[dict[str, Any]]:
        check_name(name)
        model = self.client.get_registered_model(name)
        props = {} if model is None else dict(model.custom_properties or {})
        return [json.loads(str(props[k])) for k in sorted(props) if k.startswith(HISTORY_PREFIX)]

    # ------------------------------------------------------------------ internals
    def _versions(self, name: str) -> list[Any]:
        """Every ModelVersion of ``name``, any state ([] when the model does not exist)."""
        from model_registry.exceptions import StoreError

        if self.client.get_registered_model(name) is None:
            return []
        try:
            return list(self.client.get_model_versions(name))
        except StoreError:  # the model was not there after all
            return []

    def _all_versions(self, name: str) -> list[int]:
        return [int(mv.name) for mv in self._versions(name) if mv.name.isdigit()]

    def _model_version(self, name: str, version: int) -> Any:
        from model_registry.exceptions import StoreError

        try:
            return self.client.get_model_version(name, str(version))
        except StoreError:  # the client's "model does not exist"
            return None

    def _update_model(self, name: str, properties: dict[str, Any]) -> None:
        """One update of the RegisteredModel's custom properties: what it changes lands together."""
        model = self.client.get_registered_model(name)
        if model is None:
            raise ArtifactError(f"model {name!r} does not exist in Kubeflow Model Registry")
        model.custom_properties = {**(model.custom_properties or {}), **properties}
        self.client.update(model)

    def _manifest(self, where: str, manifest_uri: str, sha: str) -> dict[str, Any]:
        key = (where, sha)
        if key not in self._manifests:
            try:
                manifest = json.loads(self.fs.cat_file(self._path(manifest_uri)))
            except FileNotFoundError:
                raise ArtifactError(f"{where}: its manifest {manifest_uri} is missing from storage") from None
            except ValueError as exc:
                raise ArtifactError(f"{where}: corrupt manifest {manifest_uri}: {exc}") from exc
            if content_hash(manifest_files(manifest, where)) != sha:
                raise ArtifactError(f"{where}: its manifest does not match the {COMPLETE_PROP} property; "
                                    "the stored copy was changed after registration")
            self._manifests[key] = manifest
        return self._manifests[key]

    def _uri(self, path: str) -> str:
        return path if self._local else self.fs.unstrip_protocol(path)

    def _path(self, uri: str) -> str:
        return uri if self._local else str(fsspec.core.strip_protocol(uri))

    def _remove(self, path: str, removed: list[str]) -> None:
        if path and self.fs.exists(path):
            self.fs.rm(path, recursive=True)
            removed.append(self._uri(path))

    def _discard(self, name: str, version: int | None, base: str) -> None:
        """Best-effort removal of a failed registration (never masks the real error)."""
        try:
            if version is not None:
                from model_registry.types import ModelVersionState

                mv = self._model_version(name, version)
                if mv is not None:
                    mv.state = ModelVersionState.ARCHIVED
                    self.client.update(mv)
            if self.fs.exists(base):
                self.fs.rm(base, recursive=True)
        except Exception as exc:  # broad on purpose: cleanup after a failure must not raise
            log.warning("could not remove the failed registration of %s at %s: %s", name, base, exc)


def _connect(parts: Any, author: str) -> Any:
    """A ``model_registry.ModelRegistry`` for ``kubeflow-mr[+https]://HOST:PORT`` (it checks the server)."""
    from model_registry import ModelRegistry as MRClient

    secure = parts.scheme.endswith("+https")
    address = f"{'https' if secure else 'http'}://{parts.hostname}"
    try:
        with warnings.catch_warnings():  # no token on plain HTTP is the in-cluster norm, not worth a warning
            if not secure:
                warnings.filterwarnings("ignore", "User access token is missing", UserWarning)
            return MRClient(address, parts.port or (443 if secure else 8080), author=author, is_secure=secure)
    except Exception as exc:  # the client raises its StoreError or aiohttp's errors when it cannot reach the server
        raise ArtifactError(f"cannot reach Kubeflow Model Registry at {address}:{parts.port}: "
                            f"{describe(str(exc), 300, raw=True)}") from exc


__all__ = ["COMPLETE_PROP", "KubeflowRegistry", "alias_property"]
