"""The model registry interface, and the checks every backend shares.

A registry holds versions (1, 2, ...) of named models; a version is a full copy of a model
directory (``genctr.artifacts``: ``model.safetensors``, ``config.json``, vocabularies) with the
SHA-256 of every file. Two aliases point at versions: ``champion`` (what the gate compares
against and production serves) and ``canary`` (the version a canary is judging). Every backend
keeps the same promises, which ``tests/test_registry.py`` checks on each:

- ``register`` copies the directory in and returns the next version number. A version is
  usable (listed, fetched, aliased) only once its completion record exists, and that record is
  the last thing ``register`` writes; so a crash at any point leaves both aliases on complete
  versions. A number a crash left behind is skipped, not reused; ``purge_incomplete`` removes
  what the crash left.
- ``set_champion`` re-hashes the version's files first (``verify``); the move itself is one
  atomic write, and every move is recorded in ``history``.
- ``download`` hashes what it copies and publishes the directory only when every file matches.

``ModelRegistry(uri)`` opens the backend the URI names, as ``pathlib.Path(p)`` gives a
``PosixPath``: :func:`genctr.registry.factory.open_registry` lists the URI forms.
"""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from genctr.artifacts.files import REQUIRED_FILES  # what every model directory holds
from genctr.atomic import publish, temp_path
from genctr.errors import ArtifactError, ConfigError, describe

log = logging.getLogger(__name__)

CHAMPION = "champion"
CANARY = "canary"
ALIASES = (CHAMPION, CANARY)
COMPLETE = "_COMPLETE"  # the fsspec store's completion marker; never copied in from a source directory
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch: "$" would take "ctr\n"
_CHUNK = 4 << 20  # bytes per read while copying and hashing


@dataclass(frozen=True)
class ModelVersion:
    """One complete registered version. ``uri`` is what KServe's ``storageUri`` takes."""

    name: str
    version: int
    path: str  # where the backend keeps it (a path in its filesystem, an MLflow artifact URI, ...)
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


# A backend's files, readable: (filesystem, directory). verify and download read through it.
FileView = AbstractContextManager[tuple[fsspec.AbstractFileSystem, str]]


class ModelRegistry:
    """Versioned model store with an atomic champion alias; the interface every backend implements.

    ``ModelRegistry(uri, **options)`` is ``open_registry(uri, **options)``: a local path or fsspec
    URI opens the fsspec store, ``mlflow+http(s)://`` MLflow, ``kubeflow-mr://`` Kubeflow Model
    Registry. Backends implement the methods that raise NotImplementedError here.
    """

    uri: str  # what the registry was opened with (shown in messages)

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelRegistry:
        if cls is ModelRegistry:  # the interface itself: open the backend the URI names (like pathlib.Path)
            from genctr.registry.factory import backend_for

            cls = backend_for(args[0] if args else kwargs.get("root", kwargs.get("uri", "")))
        return super().__new__(cls)

    # ------------------------------------------------------------------ writing
    def register(self, model_dir: str | os.PathLike[str], name: str, metadata: dict[str, Any] | None = None) -> int:
        """Copy ``model_dir`` into the registry as the next version of ``name``; return it."""
        check_name(name)
        meta = json_object(metadata or {}, "metadata")
        src_fs, src = fsspec.core.url_to_fs(str(model_dir))
        check_model_dir(src, src_fs)
        return self._register(src_fs, src.rstrip("/"), name, meta)

    def set_champion(self, name: str, version: int, *, reason: str = "", verify: bool = True) -> None:
        """Point ``name``'s champion at a complete ``version`` (re-hashing its files if ``verify``).

        A version that was the canary stops being it: promoted, it is the champion now.
        """
        mv = self.verify(name, version) if verify else self.get(name, version)
        previous = self.champion(name)
        if previous != mv.version:
            entry = {"time": now(), "from": previous, "to": mv.version, "reason": reason}
            self._move_champion(mv, entry)
            log.info("champion of %s: %s -> %d", name, previous, mv.version)
        if self.canary(name) == mv.version:
            self._set_alias(name, CANARY, None)

    def set_canary(self, name: str, version: int) -> None:
        """Point ``name``'s canary alias at a complete ``version`` (the deployer started a canary of it)."""
        mv = self.get(name, version)
        self._set_alias(name, CANARY, mv)
        log.info("canary of %s: version %d", name, mv.version)

    def clear_canary(self, name: str) -> None:
        """Remove ``name``'s canary alias (the canary was rolled back or promoted)."""
        check_name(name)
        if self.canary(name) is not None:
            self._set_alias(name, CANARY, None)

    def purge_incomplete(self, name: str) -> list[str]:
        """Delete what crashed registrations left (incomplete versions, staging copies); return them.

        Only run when no ``register`` of ``name`` is in progress: its work looks incomplete.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Model names in the registry."""
        raise NotImplementedError

    def list_versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, oldest first."""
        raise NotImplementedError

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """A complete version (the champion when ``version`` is None); ArtifactError otherwise."""
        check_name(name)
        if version is None:
            version = self.champion(name)
            if version is None:
                raise ArtifactError(f"model {name!r} has no champion yet; register and set_champion first")
        check_version(version)
        return self._get(name, int(version))

    def verify(self, name: str, version: int) -> ModelVersion:
        """Re-hash a complete version's stored files; ArtifactError if any is missing or changed."""
        mv = self.get(name, version)
        with self._files(mv) as (fs, root):
            for rel, expected in mv.files.items():
                try:
                    actual = hash_file(fs, f"{root}/{rel}")
                except FileNotFoundError:
                    raise ArtifactError(f"model {name!r} version {version}: file {rel} is missing") from None
                if actual != expected:
                    raise ArtifactError(f"model {name!r} version {version}: {rel} does not match its recorded hash")
            check_model_dir(root, fs)
        return mv

    def champion(self, name: str) -> int | None:
        """The champion version of ``name``, or None before the first ``set_champion``."""
        check_name(name)
        return self._alias(name, CHAMPION)

    def canary(self, name: str) -> int | None:
        """The version ``name``'s canary alias points at, or None."""
        check_name(name)
        return self._alias(name, CANARY)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every champion move of ``name``, oldest first: ``{"time", "from", "to", "reason"}``."""
        raise NotImplementedError

    def download(self, name: str, version: int | None, dest: str | os.PathLike[str]) -> Path:
        """Copy a complete version (champion if None) to a local directory, every file's hash checked.

        ``dest`` is replaced whole, and only once everything matches.
        """
        mv = self.get(name, version)
        out = Path(dest)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(out)
        local = fsspec.filesystem("file")
        try:
            with self._files(mv) as (fs, root):
                for rel, expected in mv.files.items():
                    if copy_file(fs, f"{root}/{rel}", local, str(tmp / rel)) != expected:
                        raise ArtifactError(f"model {name!r} version {mv.version}: {rel} does not match its "
                                            "recorded hash; the stored copy was changed after registration")
            check_model_dir(tmp)
            publish(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    # ------------------------------------------------------------------ what a backend implements
    def _register(self, src_fs: fsspec.AbstractFileSystem, src: str, name: str, metadata: dict[str, Any]) -> int:
        """Copy a checked model directory in; the completion record (``_write_marker``) goes last."""
        raise NotImplementedError

    def _get(self, name: str, version: int) -> ModelVersion:
        """A complete version, or ArtifactError saying it does not exist / is incomplete."""
        raise NotImplementedError

    def _files(self, mv: ModelVersion) -> FileView:
        """A context giving (filesystem, directory) where ``mv``'s stored files can be read."""
        raise NotImplementedError

    def _alias(self, name: str, alias: str) -> int | None:
        raise NotImplementedError

    def _set_alias(self, name: str, alias: str, mv: ModelVersion | None) -> None:
        """Point ``alias`` at ``mv`` (None: remove it) in one atomic write."""
        raise NotImplementedError

    def _move_champion(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        """Move the champion alias to ``mv`` atomically and record ``entry`` in the history."""
        raise NotImplementedError

    def _write_marker(self, *args: Any) -> None:
        """Write a version's completion record: the last write of ``register``."""
        raise NotImplementedError

    def _copy_file(self, src_fs: fsspec.AbstractFileSystem, src: str, dest_fs: fsspec.AbstractFileSystem,
                   dest: str) -> str:
        """Copy one file of a model directory being registered; return its SHA-256."""
        return copy_file(src_fs, src, dest_fs, dest)

    def _copy_tree(self, src_fs: fsspec.AbstractFileSystem, src: str, dest_fs: fsspec.AbstractFileSystem,
                   dest: str) -> dict[str, str]:
        """Copy every file under ``src`` to ``dest`` (except a stale marker); return rel -> sha256."""
        files: dict[str, str] = {}
        for path in sorted(src_fs.find(src)):
            rel = posixpath.relpath(path, src)
            if rel == COMPLETE:  # a directory downloaded from a registry must not arrive "complete"
                continue
            files[rel] = self._copy_file(src_fs, path, dest_fs, f"{dest}/{rel}")
        return files


# ---------------------------------------------------------------------- shared checks and helpers
def check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"model name {describe(name)} must be 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")


def check_version(version: Any) -> None:
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise ConfigError(f"model version must be an integer >= 1, got {describe(version)}")


def json_object(value: dict[str, Any], what: str) -> dict[str, Any]:
    """``value`` as plain JSON types (a copy); ConfigError if it does not serialise."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"registry {what} must be JSON-serialisable: {describe(str(exc), 200, raw=True)}") from exc


def content_hash(files: dict[str, str]) -> str:
    """One hash over a version's (relative path, file hash) pairs, in sorted order."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\t{files[rel]}\n".encode())
    return digest.hexdigest()


def hash_file(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(src_fs: fsspec.AbstractFileSystem, src: str, dest_fs: fsspec.AbstractFileSystem, dest: str) -> str:
    """Stream ``src`` to ``dest`` (any two fsspec filesystems); return the SHA-256 of the bytes."""
    dest_fs.makedirs(posixpath.dirname(dest), exist_ok=True)
    digest = hashlib.sha256()
    with src_fs.open(src, "rb") as fin, dest_fs.open(dest, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def manifest_files(manifest: Any, where: str) -> dict[str, str]:
    """The ``files`` map of a stored manifest, checked: ArtifactError naming ``where`` otherwise."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ArtifactError(f"{where}: corrupt manifest (no 'files' map of path -> sha256)")
    return files


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["ALIASES", "CANARY", "CHAMPION", "COMPLETE", "REQUIRED_FILES", "ModelRegistry", "ModelVersion",
           "check_model_dir", "check_name", "check_version", "content_hash", "copy_file", "hash_file", "json_object"]
