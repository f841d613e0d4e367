"""One storage root from which every location a run shares with other pods is derived.

A run on a cluster executes each step in its own pod: the registry the register step writes, the
Feast registry the serving pods read and the A/B logs the canary loop reads must live under one
root every pod can reach (an object store such as ``s3://bucket/genctr``). On a laptop the root
is a local directory, ``$GENCTR_HOME`` by default. Layout under the root::

    registry/                     model registry (genctr.registry)
    feast/<online_store>/         Feast: registry.db, one per online store (sqlite | redis)
    builds/<run id>/              what a run's feature build leaves for others (Feast's sources)
    ab-logs/<deployment>/         A/B log tables: requests/, impressions/, clicks/
    reports/<run id>/             HTML/JSON reports of a run

The root comes from, in order: an explicit value (the pipelines' ``storage_root`` parameter,
a CLI flag), ``$GENCTR_STORAGE_ROOT``, and, unless the caller requires an explicit root (the
cluster profile does: a pod-local default would silently split the run), ``$GENCTR_HOME``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from genctr.errors import ConfigError, describe
from genctr.paths import home

STORAGE_ROOT_ENV = "GENCTR_STORAGE_ROOT"
ONLINE_STORES = ("sqlite", "redis")  # genctr.features.feast_sync's templates, one registry each
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # one path segment: no '/', never '.' or '..'


@dataclass(frozen=True)
class StorageLayout:
    """Where shared state lives under ``root`` (an fsspec URI like ``s3://bucket/genctr``, or a
    local directory, made absolute here: pods and steps differ in working directory)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", _normalise_root(self.root))

    @property
    def is_remote(self) -> bool:
        """An object-store (or other fsspec) URI rather than a local directory."""
        return "://" in self.root

    @property
    def registry(self) -> str:
        """Root of the model registry (``genctr.registry.ModelRegistry``)."""
        return self._join("registry")

    def feast_dir(self, online_store: str) -> str:
        """Feast state of one online store: its file registry and, for a local SQLite store, the store."""
        if online_store not in ONLINE_STORES:
            raise ConfigError(f"online store must be one of {ONLINE_STORES}, got {describe(online_store)}")
        return self._join("feast", online_store)

    def feast_registry(self, online_store: str) -> str:
        """Feast's file registry for ``online_store``: separate per store, because ``feast apply`` /
        ``feast plan`` against one store would otherwise tear down the other's tables."""
        return f"{self.feast_dir(online_store)}/registry.db"

    def build(self, run_id: str) -> str:
        """What the feature build of run ``run_id`` leaves for other pods (Feast's offline sources)."""
        return self._join("builds", _segment(run_id, "run id"))

    def ab_logs(self, deployment: str) -> str:
        """A/B log tables of ``deployment`` (the log sink writes here, the canary loop reads here)."""
        return self._join("ab-logs", _segment(deployment, "deployment"))

    def reports(self, run_id: str) -> str:
        """Reports of run ``run_id``."""
        return self._join("reports", _segment(run_id, "run id"))

    def _join(self, *parts: str) -> str:
        return "/".join((self.root, *parts))


def resolve_root(storage_root: str = "", *, required: bool = False) -> str:
    """The storage root: ``storage_root`` if given, else ``$GENCTR_STORAGE_ROOT``, else (unless
    ``required``) ``$GENCTR_HOME``. Raises ConfigError naming both settings when none is set
    and one is required."""
    root = (storage_root or "").strip() or os.environ.get(STORAGE_ROOT_ENV, "").strip()
    if root:
        return root
    if required:
        raise ConfigError(
            f"no storage root: set the pipeline parameter storage_root (e.g. s3://bucket/genctr) or the "
            f"environment variable {STORAGE_ROOT_ENV} of the step's pod; every step of a cluster run must "
            "share one root (a pod-local default would keep the registry from the next step)")
    return str(home())


def storage_layout(storage_root: str = "", *, required: bool = False) -> StorageLayout:
    """:class:`StorageLayout` of :func:`resolve_root` (``storage_root`` / env / ``$GENCTR_HOME``)."""
    return StorageLayout(resolve_root(storage_root, required=required))


def run_locations(storage_root: str = "", *, required: bool = False, run_id: str, online_store: str = "sqlite",
                  deployment: str = "genctr-ctr", registry_root: str = "", log_dir: str = "") -> dict[str, str]:
    """Every shared location one pipeline run uses, from one root; ``registry_root`` and ``log_dir``
    override theirs when given. Checks the root is reachable (a bucket this pod's credentials
    see; a local directory that can be made) so a misconfigured run stops at its first step."""
    layout = storage_layout(storage_root, required=required)
    check_reachable(layout)
    return {"root": layout.root, "registry": registry_root or layout.registry,
            "feast_registry": layout.feast_registry(online_store), "build": layout.build(run_id),
            "ab_logs": log_dir or layout.ab_logs(deployment), "reports": layout.reports(run_id)}


def check_reachable(layout: StorageLayout) -> None:
    """Raise ConfigError unless ``layout.root`` can be used from here."""
    if not layout.is_remote:
        try:
            Path(layout.root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"storage root {layout.root} cannot be created: {exc}") from None
        return
    import fsspec

    hint = ("the step needs the object store's credentials and endpoint in its environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3: the storage Secret, compiled in with --storage-secret)")
    try:
        fs, path = fsspec.core.url_to_fs(layout.root)
        bucket = path.split("/", 1)[0]
        found = fs.exists(bucket)
    except ImportError as exc:
        raise ConfigError(f"storage root {layout.root}: no filesystem for its scheme ({exc})") from None
    except Exception as exc:  # broad on purpose: every client error (auth, DNS, TLS) means "not reachable"
        raise ConfigError(f"storage root {layout.root} is not reachable ({type(exc).__name__}: "
                          f"{describe(str(exc), 300, raw=True)}); {hint}") from None
    if not found:
        raise ConfigError(f"storage root {layout.root}: bucket {bucket!r} does not exist or is not visible; {hint}")


def _normalise_root(root: str) -> str:
    if not isinstance(root, str) or not root.strip():
        raise ConfigError(f"storage root must be a non-empty path or URI, got {describe(root)}")
    text = root.strip()
    if any(c.isspace() for c in text):
        raise ConfigError(f"storage root {describe(text)} contains whitespace")
    if "://" not in text:
        return str(Path(text).expanduser().absolute())
    parts = urlsplit(text)
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", parts.scheme):
        raise ConfigError(f"storage root {describe(text)}: {describe(parts.scheme)} is not a URI scheme")
    if parts.scheme == "file":
        return str(Path(parts.path).absolute())
    if not parts.netloc:
        raise ConfigError(f"storage root {describe(text)} names no bucket: expected {parts.scheme}://bucket[/prefix]")
    if parts.query or parts.fragment:
        raise ConfigError(f"storage root {describe(text)} must not carry a query or fragment")
    return text.rstrip("/")


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ConfigError(f"{what} {describe(value)} must be one path segment: letters, digits, '.', '_', '-'")
    return value
