"""Versioned model store on a local directory or any fsspec URI (``s3://``, ``gs://``, ``memory://``).

Layout under the root::

    <name>/versions/<v>/              a full copy of a model directory (v = 1, 2, ...)
    <name>/versions/<v>/_COMPLETE     JSON written last: content hash, file hashes, metadata
    <name>/_staging/<id>/             where a copy is written before it is moved into place
    <name>/champion.json              the champion pointer, replaced atomically
    <name>/history/<ns>-<id>.json     one object per pointer move; never rewritten (append-only)

``register`` copies into staging, moves staging to ``versions/<v>``, then writes
``_COMPLETE``. A version without the marker is incomplete: it is not listed, cannot be
fetched, and ``set_champion`` refuses it, so a crash at any point leaves the champion on
its old, complete version. The pointer is one small JSON object: on a local filesystem it
is written to a temporary file and renamed over the old one; on an object store it is one
PUT of the whole object, which readers see entirely or not at all. A version number left
behind by a hard crash is skipped, not reused, until ``purge_incomplete``. Concurrent writers on one model name are
safe on a local filesystem (rename refuses an existing version); on object stores a
single writer per name is assumed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import numbers
import os
import posixpath
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from genctr.artifacts.files import REQUIRED_FILES  # what every model directory holds
from genctr.atomic import write_bytes
from genctr.errors import ArtifactError, ConfigError, describe

log = logging.getLogger(__name__)

COMPLETE = "_COMPLETE"  # completion marker, the last file written into a version
POINTER = "champion.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch: "$" would take "ctr\n"
_CHUNK = 4 << 20  # bytes per read while copying and hashing


@dataclass(frozen=True)
class ModelVersion:
    """One complete registered version. ``uri`` is what KServe's ``storageUri`` takes."""

    name: str
    version: int
    path: str  # path inside the registry's filesystem
    uri: str  # local path, or the full URI on an object store
    sha256: str  # hash over the sorted (relative path, file hash) list
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    metadata: dict[str, Any] = field(default_factory=dict)
    registered_at: str = ""


def check_model_dir(model_dir: str | os.PathLike[str], fs: fsspec.AbstractFileSystem | None = None) -> None:
    """Raise ArtifactError unless ``model_dir`` holds model.safetensors and a JSON-object config.json."""
    if fs is None:
        fs, path = fsspec.core.url_to_fs(str(model_dir))
    else:
        path = str(model_dir)
    missing = [f for f in REQUIRED_FILES if not fs.isfile(posixpath.join(path, f))]
    if missing:
        raise ArtifactError(f"model directory {model_dir} lacks {missing}; a model needs {list(REQUIRED_FILES)}")
    try:
        config = json.loads(fs.cat_file(posixpath.join(path, "config.json")))
    except ValueError as exc:
        raise ArtifactError(f"{model_dir}/config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{model_dir}/config.json must hold a JSON object")


class ModelRegistry:
    """Versioned model store rooted at a local path or fsspec URI.

    ``storage_options`` go to the fsspec filesystem (credentials, endpoint, ...).
    """

    def __init__(self, root: str | os.PathLike[str], **storage_options: Any) -> None:
        self.fs, path = fsspec.core.url_to_fs(str(root), **storage_options)
        self.root = path.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)

    # ------------------------------------------------------------------ writing
    def register(self, model_dir: str | os.PathLike[str], name: str, metadata: dict[str, Any] | None = None) -> int:
        """Copy ``model_dir`` into the registry as the next version of ``name``; return it."""
        _check_name(name)
        meta = _json_object(metadata or {}, "metadata")
        src_fs, src = fsspec.core.url_to_fs(str(model_dir))
        check_model_dir(src, src_fs)
        staging = f"{self._model_root(name)}/_staging/{uuid.uuid4().hex}"
        target: str | None = None
        try:
            files = self._copy_tree(src_fs, src, staging)
            version = self._move_into_place(name, staging)
            target = self._version_path(name, version)
            marker = {
                "name": name,
                "version": version,
                "sha256": _content_hash(files),
                "files": files,
                "metadata": meta,
                "registered_at": _now(),
            }
            self._write_json(f"{target}/{COMPLETE}", marker)  # last: the version now exists
        except BaseException:
            for leftover in (staging, target):
                self._discard(leftover)
            raise
        log.info("registered %s version %d at %s", name, version, self._uri(target))
        return version

    def set_champion(self, name: str, version: int, *, reason: str = "", verify: bool = True) -> None:
        """Point ``name``'s champion at a complete ``version`` (re-hashing its files if ``verify``)."""
        mv = self.verify(name, version) if verify else self.get(name, version)
        previous = self.champion(name)
        if previous == mv.version:
            return
        pointer = {"name": name, "version": mv.version, "sha256": mv.sha256, "uri": mv.uri,
                   "previous": previous, "reason": reason, "updated_at": _now()}
        self._write_json(self._pointer_path(name), pointer)
        entry = {"time": pointer["updated_at"], "from": previous, "to": mv.version, "reason": reason}
        self._write_json(f"{self._model_root(name)}/history/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json", entry)
        log.info("champion of %s: %s -> %d", name, previous, mv.version)

    def purge_incomplete(self, name: str) -> list[str]:
        """Delete staging copies and incomplete versions left by crashes; return their paths.

        Only run when no ``register`` of ``name`` is in progress: its work looks incomplete.
        """
        done = set(self.list_versions(name))
        stale = [self._version_path(name, v) for v in self._all_versions(name) if v not in done]
        staging_root = f"{self._model_root(name)}/_staging"
        if self.fs.exists(staging_root):
            stale += list(self.fs.ls(staging_root, detail=False))
        for path in stale:
            self._discard(path)
        return stale

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Model names that have at least one version directory."""
        if not self.fs.exists(self.root):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.root, detail=False)
                      if self.fs.exists(f"{p.rstrip('/')}/versions"))

    def list_versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, oldest first."""
        _check_name(name)
        markers = self.fs.glob(f"{self._model_root(name)}/versions/*/{COMPLETE}")
        return sorted(v for v in (_as_version(posixpath.basename(posixpath.dirname(m))) for m in markers)
                      if v is not None)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """A complete version (the champion when ``version`` is None); ArtifactError otherwise."""
        _check_name(name)
        if version is None:
            version = self.champion(name)
            if version is None:
                raise ArtifactError(f"model {name!r} has no champion yet; register and set_champion first")
        _check_version(version)
        path = self._version_path(name, version)
        try:
            marker = json.loads(self.fs.cat_file(f"{path}/{COMPLETE}"))
        except FileNotFoundError:
            state = "is incomplete (no _COMPLETE marker)" if self.fs.exists(path) else "does not exist"
            raise ArtifactError(f"model {name!r} version {version} {state}") from None
        except ValueError as exc:
            raise ArtifactError(f"model {name!r} version {version}: corrupt _COMPLETE marker: {exc}") from exc
        return ModelVersion(name=name, version=int(version), path=path, uri=self._uri(path),
                            sha256=marker["sha256"], files=marker["files"],
                            metadata=marker.get("metadata", {}), registered_at=marker.get("registered_at", ""))

    def verify(self, name: str, version: int) -> ModelVersion:
        """Re-hash a complete version's files; ArtifactError if any is missing or changed."""
        mv = self.get(name, version)
        for rel, expected in mv.files.items():
            try:
                actual = self._hash_file(f"{mv.path}/{rel}")
            except FileNotFoundError:
                raise ArtifactError(f"model {name!r} version {version}: file {rel} is missing") from None
            if actual != expected:
                raise ArtifactError(f"model {name!r} version {version}: {rel} does not match its recorded hash")
        check_model_dir(mv.path, self.fs)
        return mv

    def champion(self, name: str) -> int | None:
        """The champion version of ``name``, or None before the first ``set_champion``."""
        _check_name(name)
        try:
            pointer = json.loads(self.fs.cat_file(self._pointer_path(name)))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ArtifactError(f"champion pointer of {name!r} is corrupt: {exc}") from exc
        return int(pointer["version"])

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every champion move of ``name``, oldest first: ``{"time", "from", "to", "reason"}``."""
        _check_name(name)
        root = f"{self._model_root(name)}/history"
        if not self.fs.exists(root):
            return []
        paths = sorted(p for p in self.fs.ls(root, detail=False) if p.endswith(".json"))
        return [json.loads(self.fs.cat_file(p)) for p in paths]

    def download(self, name: str, version: int | None, dest: str | os.PathLike[str]) -> Path:
        """Copy a complete version (champion if None) to a local directory and check it."""
        mv = self.get(name, version)
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        for rel in mv.files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(f"{mv.path}/{rel}", str(out / rel))
        check_model_dir(out)
        return out

    # ------------------------------------------------------------------ internals
    def _model_root(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def _version_path(self, name: str, version: int) -> str:
        return f"{self._model_root(name)}/versions/{int(version)}"

    def _pointer_path(self, name: str) -> str:
        return f"{self._model_root(name)}/{POINTER}"

    def _uri(self, path: str) -> str:
        return path if self._local else self.fs.unstrip_protocol(path)

    def _all_versions(self, name: str) -> list[int]:
        """Every version directory, complete or not."""
        root = f"{self._model_root(name)}/versions"
        if not self.fs.exists(root):
            return []
        found = (_as_version(posixpath.basename(p.rstrip("/"))) for p in self.fs.ls(root, detail=False))
        return sorted(v for v in found if v is not None)

    def _copy_tree(self, src_fs: fsspec.AbstractFileSystem, src: str, dest: str) -> dict[str, str]:
        """Copy every file under ``src`` to ``dest`` (except a stale marker); return rel -> sha256."""
        src = src.rstrip("/")
        files: dict[str, str] = {}
        for path in sorted(src_fs.find(src)):
            rel = posixpath.relpath(path, src)
            if rel == COMPLETE:  # a directory downloaded from a registry must not arrive "complete"
                continue
            files[rel] = self._copy_file(src_fs, path, f"{dest}/{rel}")
        return files

    def _copy_file(self, src_fs: fsspec.AbstractFileSystem, src: str, dest: str) -> str:
        self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        digest = hashlib.sha256()
        with src_fs.open(src, "rb") as fin, self.fs.open(dest, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
        return digest.hexdigest()

    def _hash_file(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _move_into_place(self, name: str, staging: str) -> int:
        """Move staging to the next free ``versions/<v>``; a version taken meanwhile is skipped."""
        versions_root = f"{self._model_root(name)}/versions"
        self.fs.makedirs(versions_root, exist_ok=True)
        for _ in range(1000):
            version = max(self._all_versions(name), default=0) + 1
            target = self._version_path(name, version)
            if self._local:
                try:
                    os.rename(staging, target)  # atomic; fails if another writer took the number
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue
                    raise
                return version
            if not self.fs.exists(target):
                self.fs.mv(staging, target, recursive=True)  # copy + delete: no marker yet, so invisible
                return version
        raise ArtifactError(f"could not find a free version number for {name!r}")

    def _write_json(self, path: str, obj: dict[str, Any]) -> None:
        """Write one small JSON object atomically (temp + rename locally, one PUT elsewhere)."""
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        if not self._local:
            self.fs.pipe_file(path, data)
            return
        write_bytes(path, data, fsync=True)

    def _discard(self, path: str | None) -> None:
        """Best-effort removal of a leftover file or directory (never masks the real error)."""
        if path is None:
            return
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception as exc:  # broad on purpose: cleanup after a failure must not raise
            log.warning("could not remove leftover %s: %s", path, exc)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"model name {describe(name)} must be 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")


def _check_version(version: Any) -> None:
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise ConfigError(f"model version must be an integer >= 1, got {describe(version)}")


def _json_object(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"registry {what} must be JSON-serialisable: {describe(str(exc), 200, raw=True)}") from exc


def _as_version(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\t{files[rel]}\n".encode())
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["COMPLETE", "REQUIRED_FILES", "ModelRegistry", "ModelVersion", "check_model_dir"]
