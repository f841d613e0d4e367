"""The registry on an MLflow Model Registry: ``mlflow+http://HOST:PORT`` (or ``mlflow+https://``).

What lives where in MLflow::

    registered model <name>          tag genctr.managed=true; aliases @champion and @canary;
                                     tags genctr.history.<ns>-<id>: one JSON object per champion move
    model version <v>                source: the run's artifact URI of model/; tags genctr.sha256 (at
                                     creation) and genctr.complete (the content hash, written LAST)
    run, in experiment genctr/<name> artifacts model/ (the model directory, as is: no pyfunc, no pickle)
                                     and genctr/manifest.json (file hashes, metadata); the metadata's
                                     numbers as metrics and its other scalars as params (:func:`run_record`)

``register`` creates the run, logs the directory, the manifest and the metadata, ends the run,
creates the model version (the server numbers it inside a transaction, so concurrent writers get
distinct numbers) and only then tags it ``genctr.complete``. A version without that tag is
incomplete: not listed, not fetched, never aliased; so a crash between "register" and "move
the alias" leaves @champion on its old, complete version. MLflow never reuses a version number,
even a deleted one; ``purge_incomplete`` deletes incomplete versions and orphaned runs.

Options (keywords, or the URI's query string): ``experiment`` (default ``genctr/<name>``) and
``artifacts_destination``. KServe's storage initializer reads ``s3://``, ``gs://``, ``pvc://``, ...
but neither ``models:/`` nor the ``mlflow-artifacts:/`` URIs of a server that proxies artifacts,
so :attr:`ModelVersion.uri` is the run's artifact location in storage: the source itself when
the server hands out storage URIs (``mlflow server --no-serve-artifacts --default-artifact-root
s3://...``), or, for a proxying server (``--artifacts-destination s3://bucket/mlflow``), that
same location given as ``artifacts_destination``. Credentials: the MLflow client's own
``MLFLOW_TRACKING_TOKEN`` / ``MLFLOW_TRACKING_USERNAME`` + ``MLFLOW_TRACKING_PASSWORD``.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from genctr.atomic import write_json
from genctr.errors import ArtifactError, ConfigError, describe
from genctr.registry.base import (
    CHAMPION,
    ModelRegistry,
    ModelVersion,
    check_name,
    content_hash,
    iter_chunks,
    manifest_files,
    now,
)
from genctr.registry.factory import MLFLOW_SCHEMES, scheme_of, split_options
from genctr.registry.mlflow_record import run_record

log = logging.getLogger(__name__)

MODEL_PATH = "model"  # the model directory inside the run's artifacts
MANIFEST_PATH = "genctr/manifest.json"
COMPLETE_TAG = "genctr.complete"  # on a model version; its value is the content hash
SHA_TAG = "genctr.sha256"
MANAGED_TAG = "genctr.managed"  # on a registered model genctr writes
MODEL_TAG = "genctr.model"  # on a registration run: the model name
HISTORY_PREFIX = "genctr.history."
_PAGE = 1000


class MlflowRegistry(ModelRegistry):
    """Versioned model store on an MLflow tracking server with a Model Registry."""

    OPTIONS = ("experiment", "artifacts_destination")

    def __init__(self, uri: str, *, experiment: str | None = None, artifacts_destination: str | None = None) -> None:
        base, opts = split_options(uri, self.OPTIONS, {"experiment": experiment,
                                                       "artifacts_destination": artifacts_destination})
        if scheme_of(base) not in MLFLOW_SCHEMES or not urlsplit(base).hostname:
            raise ConfigError(f"MLflow registry URI {describe(uri)} must look like mlflow+http://HOST:PORT "
                              "(or mlflow+https://HOST[/PREFIX])")
        from mlflow import MlflowClient  # heavy: only when an MLflow registry is opened

        self.uri = uri
        self.tracking_uri = base.split("+", 1)[1]
        self.experiment = opts.get("experiment") or None
        self.artifacts_destination = (opts.get("artifacts_destination") or "").rstrip("/") or None
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._manifests: dict[tuple[str, int, str], dict[str, Any]] = {}  # immutable once complete
        self._warned_proxy = False

    # ------------------------------------------------------------------ writing
    def _register(self, src_fs: fsspec.AbstractFileSystem, src: str, name: str, metadata: dict[str, Any]) -> int:
        with self._calls(f"registering {name!r}"):
            self._ensure_model(name)
            run = self.client.create_run(self._experiment_id(name), run_name=f"register-{name}",
                                         tags={MODEL_TAG: name})
        run_id, version = run.info.run_id, None
        try:
            with tempfile.TemporaryDirectory(prefix="genctr-mlflow-") as tmp:
                local = fsspec.filesystem("file")
                files = self._copy_tree(src_fs, src, local, f"{tmp}/{MODEL_PATH}")
                sha = content_hash(files)
                write_json(Path(tmp) / MANIFEST_PATH, {"name": name, "sha256": sha, "files": files,
                                                       "metadata": metadata, "registered_at": now()})
                with self._calls(f"logging {name!r} to run {run_id}"):
                    self._log_record(run_id, *run_record(metadata))
                    self.client.log_artifacts(run_id, f"{tmp}/{MODEL_PATH}", MODEL_PATH)
                    self.client.log_artifact(run_id, str(Path(tmp) / MANIFEST_PATH), "genctr")
            with self._calls(f"creating a version of {name!r}"):
                self.client.set_terminated(run_id, "FINISHED")
                mv = self.client.create_model_version(name, f"{run.info.artifact_uri}/{MODEL_PATH}", run_id=run_id,
                                                      tags={SHA_TAG: sha}, await_creation_for=0)
            version = int(mv.version)
            self._write_marker(name, version, sha)  # last: the version is usable from here on
        except BaseException:
            self._discard(name, version, run_id)
            raise
        log.info("registered %s version %d in MLflow %s (run %s)", name, version, self.tracking_uri, run_id)
        return version

    def _write_marker(self, *args: Any) -> None:
        name, version, sha = args
        with self._calls(f"completing {name!r} version {version}"):
            self.client.set_model_version_tag(name, str(version), COMPLETE_TAG, sha)

    def _move_champion(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        self._set_alias(mv.name, CHAMPION, mv)  # one request: the alias moves whole or not at all
        with self._calls(f"recording the champion move of {mv.name!r}"):
            key = f"{HISTORY_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            self.client.set_registered_model_tag(mv.name, key, json.dumps(entry, sort_keys=True))

    def _set_alias(self, name: str, alias: str, mv: ModelVersion | None) -> None:
        with self._calls(f"moving @{alias} of {name!r}"):
            if mv is None:
                self.client.delete_registered_model_alias(name, alias)
            else:
                self.client.set_registered_model_alias(name, alias, str(mv.version))

    def purge_incomplete(self, name: str) -> list[str]:
        """Delete incomplete versions (with their runs) and runs no version came of; return their URIs.

        Only run when no ``register`` of ``name`` is in progress: its work looks incomplete.
        """
        check_name(name)
        removed: list[str] = []
        versions = self._versions(name)
        with self._calls(f"purging {name!r}"):
            for v in versions:
                if COMPLETE_TAG not in v.tags:
                    self.client.delete_model_version(name, v.version)
                    self.client.delete_run(v.run_id)
                    removed.append(f"models:/{name}/{v.version}")
            referenced = {v.run_id for v in versions}
            experiment = self.client.get_experiment_by_name(self._experiment_name(name))
            if experiment is not None:
                runs = _pages(lambda token: self.client.search_runs(
                    [experiment.experiment_id], filter_string=f"tags.`{MODEL_TAG}` = '{name}'",
                    max_results=_PAGE, page_token=token))
                for r in runs:
                    if r.info.run_id not in referenced:
                        self.client.delete_run(r.info.run_id)
                        removed.append(f"runs:/{r.info.run_id}")
        return removed

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Registered models genctr wrote (tagged genctr.managed)."""
        with self._calls("listing models"):
            models = _pages(lambda token: self.client.search_registered_models(
                filter_string=f"tags.`{MANAGED_TAG}` = 'true'", max_results=_PAGE, page_token=token))
            return sorted(m.name for m in models)

    def list_versions(self, name: str) -> list[int]:
        check_name(name)
        return sorted(int(v.version) for v in self._versions(name) if COMPLETE_TAG in v.tags)

    def _get(self, name: str, version: int) -> ModelVersion:
        mv = self._model_version(name, version)
        if mv is None:
            raise ArtifactError(f"model {name!r} version {version} does not exist in MLflow {self.tracking_uri}")
        sha = mv.tags.get(COMPLETE_TAG)
        if not sha:
            raise ArtifactError(f"model {name!r} version {version} is incomplete (no {COMPLETE_TAG} tag): "
                                "its registration did not finish")
        manifest = self._manifest(name, version, mv.run_id, sha)
        return ModelVersion(name=name, version=version, path=mv.source, uri=self._storage_uri(mv.source),
                            sha256=sha, files=manifest_files(manifest, f"model {name!r} version {version}"),
                            metadata=manifest.get("metadata", {}), registered_at=manifest.get("registered_at", ""))

    @contextmanager
    def _files(self, mv: ModelVersion) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
        run_id = self._run_of(mv.name, mv.version)
        with tempfile.TemporaryDirectory(prefix="genctr-mlflow-") as tmp:
            with self._calls(f"downloading {mv.name!r} version {mv.version}"):
                path = self.client.download_artifacts(run_id, MODEL_PATH, tmp)
            yield fsspec.filesystem("file"), path

    def _alias(self, name: str, alias: str) -> int | None:
        model = self._registered_model(name)
        value = None if model is None else dict(model.aliases or {}).get(alias)
        return int(value) if value is not None else None

    def history(self, name: str) -> list[dict[str, Any]]:
        check_name(name)
        model = self._registered_model(name)
        tags = {} if model is None else dict(model.tags or {})
        return [json.loads(tags[k]) for k in sorted(tags) if k.startswith(HISTORY_PREFIX)]

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """MLflow's errors (server down, permission, bad request) as ArtifactError naming the server."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            raise ArtifactError(f"MLflow registry {self.tracking_uri}: {what} failed: "
                                f"{describe(str(exc), 400, raw=True)}") from exc

    def _experiment_name(self, name: str) -> str:
        return self.experiment or f"genctr/{name}"

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        title = self._experiment_name(name)
        experiment = self.client.get_experiment_by_name(title)
        if experiment is None:
            try:
                return str(self.client.create_experiment(title, tags={MODEL_TAG: name}))
            except MlflowException as exc:  # another writer created it meanwhile
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self.client.get_experiment_by_name(title)
        if experiment is None or experiment.lifecycle_stage != "active":
            raise ConfigError(f"MLflow experiment {title!r} is deleted: restore it (mlflow experiments restore) "
                              "or give the registry another experiment=")
        return str(experiment.experiment_id)

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={MANAGED_TAG: "true"},
                                                description="Registered by genctr: CTR model directories")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            self.client.set_registered_model_tag(name, MANAGED_TAG, "true")

    def _log_record(self, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        for chunk in iter_chunks(sorted(params.items()), 100):  # MLflow: at most 100 params per batch
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        for chunk in iter_chunks(sorted(metrics.items()), 1000):
            self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in chunk])

    def _versions(self, name: str) -> list[Any]:
        """Every live MLflow version of ``name`` (complete or not)."""
        with self._calls(f"listing versions of {name!r}"):
            return _pages(lambda token: self.client.search_model_versions(
                filter_string=f"name = '{name}'", max_results=_PAGE, page_token=token))

    def _model_version(self, name: str, version: int) -> Any:
        from mlflow.exceptions import MlflowException

        with self._calls(f"reading {name!r} version {version}"):
            try:
                return self.client.get_model_version(name, str(version))
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

    def _registered_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        with self._calls(f"reading {name!r}"):
            try:
                return self.client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

    def _run_of(self, name: str, version: int) -> str:
        mv = self._model_version(name, version)
        if mv is None:
            raise ArtifactError(f"model {name!r} version {version} does not exist in MLflow {self.tracking_uri}")
        return str(mv.run_id)

    def _manifest(self, name: str, version: int, run_id: str, sha: str) -> dict[str, Any]:
        """The version's manifest, checked against its completion tag (cached: it never changes)."""
        key = (name, version, sha)
        if key not in self._manifests:
            where = f"model {name!r} version {version}"
            with tempfile.TemporaryDirectory(prefix="genctr-mlflow-") as tmp:
                with self._calls(f"reading the manifest of {where}"):
                    path = self.client.download_artifacts(run_id, MANIFEST_PATH, tmp)
                try:
                    manifest = json.loads(Path(path).read_text())
                except ValueError as exc:
                    raise ArtifactError(f"{where}: corrupt manifest {MANIFEST_PATH}: {exc}") from exc
            if content_hash(manifest_files(manifest, where)) != sha:
                raise ArtifactError(f"{where}: its manifest does not match the {COMPLETE_TAG} tag; "
                                    "the run's artifacts were changed after registration")
            self._manifests[key] = manifest
        return self._manifests[key]

    def _storage_uri(self, source: str) -> str:
        """Where KServe reads the version: the source in storage (see the module docstring)."""
        parts = urlsplit(source)
        if parts.scheme == "mlflow-artifacts":
            if self.artifacts_destination is None:
                if not self._warned_proxy:
                    log.warning("MLflow %s proxies artifacts (%s): KServe cannot read that URI; give the registry "
                                "artifacts_destination= (the server's --artifacts-destination)",
                                self.tracking_uri, source)
                    self._warned_proxy = True
                return source
            source = f"{self.artifacts_destination}/{parts.path.lstrip('/')}"
        return source.removeprefix("file://") if source.startswith("file:///") else source

    def _discard(self, name: str, version: int | None, run_id: str) -> None:
        """Best-effort removal of a failed registration (never masks the real error)."""
        try:
            if version is not None:
                self.client.delete_model_version(name, str(version))
            self.client.delete_run(run_id)
        except Exception as exc:  # broad on purpose: cleanup after a failure must not raise
            log.warning("could not remove the failed registration of %s (run %s): %s", name, run_id, exc)


def _pages(fetch: Callable[[str | None], Any]) -> list[Any]:
    """Every item of a paged MLflow search (``fetch(page_token)`` returns a PagedList)."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


__all__ = ["COMPLETE_TAG", "MlflowRegistry"]
