"""The registry on a local directory or any fsspec URI (``s3://``, ``gs://``, ``memory://``): the laptop default.

Layout under the root::

    <name>/versions/<v>/              a full copy of a model directory (v = 1, 2, ...)
    <name>/versions/<v>/_COMPLETE     JSON written last: content hash, file hashes, metadata
    <name>/_staging/<id>/             where a copy is written before it is moved into place
    <name>/champion.json              the champion alias, replaced atomically
    <name>/canary.json                the canary alias, likewise (absent: no canary)
    <name>/history/<ns>-<id>.json     one object per champion move; never rewritten (append-only)

``register`` copies into staging, moves staging to ``versions/<v>``, then writes
``_COMPLETE``. A version without the marker is incomplete: it is not listed, cannot be
fetched, and ``set_champion`` refuses it, so a crash at any point leaves the champion on
its old, complete version. An alias is one small JSON object: on a local filesystem it
is written to a temporary file and renamed over the old one; on an object store it is one
PUT of the whole object, which readers see entirely or not at all. A version number left
behind by a hard crash is skipped, not reused, until ``purge_incomplete``. Concurrent writers on
one model name are safe on a local filesystem (rename refuses an existing version); on object
stores a single writer per name is assumed.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from genctr.atomic import write_bytes
from genctr.errors import ArtifactError
from genctr.registry.base import (
    CHAMPION,
    COMPLETE,
    ModelRegistry,
    ModelVersion,
    check_name,
    content_hash,
    manifest_files,
    now,
)

log = logging.getLogger(__name__)

POINTER = "champion.json"  # the champion alias (every alias is <alias>.json)


class FsspecRegistry(ModelRegistry):
    """Versioned model store rooted at a local path or fsspec URI.

    ``storage_options`` go to the fsspec filesystem (credentials, endpoint, ...).
    """

    def __init__(self, root: str | os.PathLike[str], **storage_options: Any) -> None:
        self.uri = str(root)
        self.fs, path = fsspec.core.url_to_fs(str(root), **storage_options)
        self.root = path.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)

    # ------------------------------------------------------------------ writing
    def _register(self, src_fs: fsspec.AbstractFileSystem, src: str, name: str, metadata: dict[str, Any]) -> int:
        staging = f"{self._model_root(name)}/_staging/{uuid.uuid4().hex}"
        target: str | None = None
        try:
            files = self._copy_tree(src_fs, src, self.fs, staging)
            version = self._move_into_place(name, staging)
            target = self._version_path(name, version)
            marker = {"name": name, "version": version, "sha256": content_hash(files), "files": files,
                      "metadata": metadata, "registered_at": now()}
            self._write_marker(target, marker)  # last: the version now exists
        except BaseException:
            for leftover in (staging, target):
                self._discard(leftover)
            raise
        log.info("registered %s version %d at %s", name, version, self._uri(target))
        return version

    def _write_marker(self, *args: Any) -> None:
        target, marker = args
        self._write_json(f"{target}/{COMPLETE}", marker)

    def _move_champion(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        pointer = {"name": mv.name, "version": mv.version, "sha256": mv.sha256, "uri": mv.uri,
                   "previous": entry["from"], "reason": entry["reason"], "updated_at": entry["time"]}
        self._write_json(self._alias_path(mv.name, CHAMPION), pointer)
        self._write_json(f"{self._model_root(mv.name)}/history/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json",
                         entry)

    def _set_alias(self, name: str, alias: str, mv: ModelVersion | None) -> None:
        path = self._alias_path(name, alias)
        if mv is None:
            if self.fs.exists(path):
                self.fs.rm(path)  # one delete: the alias is there or it is not
            return
        self._write_json(path, {"name": name, "version": mv.version, "sha256": mv.sha256, "uri": mv.uri,
                                "updated_at": now()})

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
        check_name(name)
        markers = self.fs.glob(f"{self._model_root(name)}/versions/*/{COMPLETE}")
        return sorted(v for v in (_as_version(posixpath.basename(posixpath.dirname(m))) for m in markers)
                      if v is not None)

    def _get(self, name: str, version: int) -> ModelVersion:
        path = self._version_path(name, version)
        try:
            marker = json.loads(self.fs.cat_file(f"{path}/{COMPLETE}"))
        except FileNotFoundError:
            state = "is incomplete (no _COMPLETE marker)" if self.fs.exists(path) else "does not exist"
            raise ArtifactError(f"model {name!r} version {version} {state}") from None
        except ValueError as exc:
            raise ArtifactError(f"model {name!r} version {version}: corrupt _COMPLETE marker: {exc}") from exc
        files = manifest_files(marker, f"model {name!r} version {version}")
        return ModelVersion(name=name, version=version, path=path, uri=self._uri(path),
                            sha256=marker["sha256"], files=files,
                            metadata=marker.get("metadata", {}), registered_at=marker.get("registered_at", ""))

    @contextmanager
    def _files(self, mv: ModelVersion) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
        yield self.fs, mv.path  # read in place

    def _alias(self, name: str, alias: str) -> int | None:
        try:
            pointer = json.loads(self.fs.cat_file(self._alias_path(name, alias)))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ArtifactError(f"{alias} pointer of {name!r} is corrupt: {exc}") from exc
        return int(pointer["version"])

    def history(self, name: str) -> list[dict[str, Any]]:
        check_name(name)
        root = f"{self._model_root(name)}/history"
        if not self.fs.exists(root):
            return []
        paths = sorted(p for p in self.fs.ls(root, detail=False) if p.endswith(".json"))
        return [json.loads(self.fs.cat_file(p)) for p in paths]

    # ------------------------------------------------------------------ internals
    def _model_root(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def _version_path(self, name: str, version: int) -> str:
        return f"{self._model_root(name)}/versions/{int(version)}"

    def _alias_path(self, name: str, alias: str) -> str:
        return f"{self._model_root(name)}/{alias}.json"  # champion.json = POINTER

    def _uri(self, path: str) -> str:
        return path if self._local else self.fs.unstrip_protocol(path)

    def _all_versions(self, name: str) -> list[int]:
        """Every version directory, complete or not."""
        root = f"{self._model_root(name)}/versions"
        if not self.fs.exists(root):
            return []
        found = (_as_version(posixpath.basename(p.rstrip("/"))) for p in self.fs.ls(root, detail=False))
        return sorted(v for v in found if v is not None)

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
                # copy + delete, file by file: no marker yet, so invisible. Not fs.mv(recursive=True):
                # on S3 it copies the files, then fails copying the prefix itself as a key (NoSuchKey)
                for src in self.fs.find(staging):
                    self.fs.copy(src, target + src[len(staging.rstrip("/")):])
                self.fs.rm(staging, recursive=True)
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


def _as_version(text: str) -> int | None:
    return int(text) if text.isdigit() else None


__all__ = ["POINTER", "FsspecRegistry"]
