"""Feast: register the definitions of ``feature_repo/`` against one feature build and load the
online store; read behaviour sequences back for serving.

``materialize`` never touches the checked-in repository: it renders a ``feature_store.yaml``
with absolute paths (registry, SQLite file) or the given Redis address into a working
directory of its own, loads ``feature_definitions.py`` as a fresh module, points its file
sources at the build's Feast tables, ``apply``s and runs ``FeatureStore.materialize(start,
end)``: Feast then records the interval on each feature view, and a later ``feast
materialize-incremental`` (or ``FeatureStore.materialize_incremental``) starts where this run
ended and loads only rows stamped after it. Two runs with different working directories cannot
collide.

On a cluster the registry is a file on the object store (``registry=s3://.../registry.db``,
one per online store: ``genctr.storage.StorageLayout.feast_registry``) and the build's Feast
tables are published beside it (``sources=<root>/builds/<run id>``) so that the registry's
sources outlive the pod that built them. Feast's S3 registry (boto3) and its file offline
store (dask, s3fs) take the endpoint and credentials from ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, as s3fs does.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from genctr.atomic import publish, write_text
from genctr.errors import ArtifactError, ConfigError
from genctr.features.feast_import import import_feast
from genctr.features.layout import BuildLayout

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

DEFAULT_REPO_DIR = Path(__file__).resolve().parents[3] / "feature_repo"
USER_VIEW = "user_behavior_seq"
SEQ_FEATURES = ("item_seq", "cate_seq", "seq_len")
_TEMPLATES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}
# Start of every full materialisation: before any valid event (events start 1990-01-01), so the
# recorded interval covers the whole build and incremental runs never fall back to Feast's
# "now - 52 weeks" start (what it does for a view with ttl=0 and no recorded interval).
MATERIALIZE_START = datetime(1970, 1, 1, tzinfo=UTC)


def materialize(build_dir: str | Path, repo_dir: str | Path = DEFAULT_REPO_DIR,
                online: str = "sqlite", redis_url: str = "localhost:6379",
                work_dir: str | Path | None = None, *, registry: str = "", sources: str = "",
                ) -> FeatureStore:
    """Apply the Feast definitions to the build at ``build_dir`` and fill the online store.

    ``work_dir`` (default ``<build_dir>/feast_store/<online>``: replaced with the build)
    receives the rendered ``feature_store.yaml`` and, for SQLite, the online store; a serving
    process opens ``FeatureStore(fs_yaml_file=work_dir/"feature_store.yaml")``.
    ``redis_url`` is Feast's ``host:port[,db=N][,password=...]``. ``registry``: Feast's file
    registry, a local path or ``s3://``/``gs://`` URI ('' = ``work_dir/registry.db``).
    ``sources``: a directory or URI the build's Feast tables are copied under (as
    ``feast/<view>/``) before the registry points at them ('' = the build itself).

    Materialises with ``FeatureStore.materialize(MATERIALIZE_START, end)``, ``end`` = now or, if
    later, just after the newest row (event times may run up to an hour ahead of this clock), so
    every row of the build is loaded and Feast records where the next incremental run starts.
    Returns the ready ``FeatureStore``.
    """
    import_feast()
    from feast import FeatureStore

    if online not in _TEMPLATES:
        raise ConfigError(f"online store must be one of {sorted(_TEMPLATES)}, got {online!r}")
    lay = BuildLayout(Path(build_dir).expanduser().absolute())
    for table in (lay.feast_user, lay.feast_item):
        if not table.exists():
            raise ArtifactError(f"{table} is missing: {lay.root} is not a complete feature build")
    repo = Path(repo_dir).expanduser().absolute()
    work = Path(work_dir).expanduser().absolute() if work_dir else lay.root / "feast_store" / online
    work.mkdir(parents=True, exist_ok=True)
    yaml_path = render_config(repo / _TEMPLATES[online], work, online, redis_url, registry=registry)
    source_root = publish_sources(lay, sources) if sources else str(lay.root)
    objects = load_definitions(repo / "feature_definitions.py", source_root)

    store = FeatureStore(repo_path=str(work), fs_yaml_file=yaml_path)
    t0 = time.perf_counter()
    store.apply(objects)
    t1 = time.perf_counter()
    end = max(datetime.now(UTC), newest_row(lay) + timedelta(microseconds=1))
    store.materialize(start_date=MATERIALIZE_START, end_date=end)
    t2 = time.perf_counter()
    log.info("feast: applied %d objects in %.2f s, materialised the %s online store up to %s in %.2f s; "
             "registry %s, config %s", len(objects), t1 - t0, online, end.isoformat(), t2 - t1,
             store.config.registry.path, yaml_path)
    return store


def render_config(template: Path, work: Path, online: str, redis_url: str, *, registry: str = "") -> Path:
    """Write ``work/feature_store.yaml`` from ``template`` with absolute, run-local paths (the
    registry at ``registry`` when given, else in ``work``)."""
    if not template.exists():
        raise ConfigError(f"Feast config template {template} does not exist (pass repo_dir=...)")
    cfg: dict[str, Any] = yaml.safe_load(template.read_text()) or {}
    reg = cfg.get("registry")
    registry_path = registry if "://" in registry else str(Path(registry).absolute()) if registry \
        else str(work / "registry.db")
    if "://" not in registry_path:
        Path(registry_path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(reg, dict):
        cfg["registry"] = {**reg, "path": registry_path}
    else:
        cfg["registry"] = registry_path
    store_cfg = dict(cfg.get("online_store") or {})
    if online == "sqlite":
        store_cfg.update(type="sqlite", path=str(work / "online_store.db"))
    else:
        store_cfg.update(type="redis", connection_string=redis_url)
    cfg["online_store"] = store_cfg
    out = work / "feature_store.yaml"
    return write_text(out, yaml.safe_dump(cfg, sort_keys=False))


def publish_sources(lay: BuildLayout, dest: str) -> str:
    """Copy the build's Feast tables (their Parquet parts) to ``dest/feast/<view>/``; return ``dest``.

    Locally the copy is renamed into place whole (genctr.atomic). On an object store the parts
    are uploaded after anything an earlier attempt left there is removed; the registry names the
    location only after the upload, so no reader is pointed at a partial table.
    """
    import fsspec

    tables = [lay.feast_user, lay.feast_item]
    parts = {t.name: sorted(p for p in t.glob("*.parquet") if not p.name.startswith((".", "_"))) for t in tables}
    if "://" not in dest:
        root = Path(dest).expanduser().absolute()
        for name, files in parts.items():
            target = root / "feast" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
            for f in files:
                shutil.copyfile(f, tmp / f.name)
            publish(tmp, target)
        return str(root)
    fs, base = fsspec.core.url_to_fs(dest)
    for name, files in parts.items():
        prefix = posixpath.join(base, "feast", name)
        if fs.exists(prefix):
            fs.rm(prefix, recursive=True)
        for f in files:
            fs.put_file(str(f), posixpath.join(prefix, f.name))
    log.info("feast: published the build's Feast tables to %s", dest)
    return dest.rstrip("/")


def newest_row(lay: BuildLayout) -> datetime:
    """The latest ``event_timestamp`` of the build's Feast tables (UTC)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    newest = MATERIALIZE_START
    for table in (lay.feast_user, lay.feast_item):
        column = ds.dataset(str(table), format="parquet").to_table(columns=["event_timestamp"])["event_timestamp"]
        value = pc.max(column).as_py() if len(column) else None
        if value is not None:
            newest = max(newest, value if value.tzinfo else value.replace(tzinfo=UTC))
    return newest


def load_definitions(path: Path, source_root: str | Path) -> list[Any]:
    """Import ``feature_definitions.py`` as a fresh module; relative file-source paths are
    resolved against ``source_root`` (a build directory or a URI: absolute locations in the
    registry, so any reader finds them)."""
    import_feast()
    from feast import Entity, FeatureService, FeatureView
    from feast.infra.offline_stores.file_source import FileSource

    if not path.exists():
        raise ConfigError(f"Feast definitions {path} do not exist (pass repo_dir=...)")
    spec = importlib.util.spec_from_file_location(f"_genctr_feast_defs_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    objects = [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, FeatureService, FileSource))]
    sources = [o for o in objects if isinstance(o, FileSource)]
    sources += [o.batch_source for o in objects
                if isinstance(o, FeatureView) and isinstance(o.batch_source, FileSource)]
    root = str(source_root)
    for src in sources:
        if "://" not in src.path and not os.path.isabs(src.path):
            src.file_options.uri = f"{root.rstrip('/')}/{src.path}" if "://" in root else str(Path(root) / src.path)
    return objects


def get_online_sequences(store: FeatureStore, user_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Behaviour sequences served online, per user id: ``{user_id: {"item_seq": [...],
    "cate_seq": [...], "seq_len": n}}`` (raw ids, oldest first). A user the store does not
    know (cold start) gets ``[]``, ``[]``, ``0``. Duplicate ids are looked up once."""
    unique = list(dict.fromkeys(int(u) for u in user_ids))
    if not unique:
        return {}
    refs = [f"{USER_VIEW}:{f}" for f in SEQ_FEATURES]
    got = store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in unique]).to_dict()
    return {
        int(u): {"item_seq": list(items or []), "cate_seq": list(cates or []), "seq_len": int(n or 0)}
        for u, items, cates, n in zip(got["user_id"], got["item_seq"], got["cate_seq"], got["seq_len"], strict=True)
    }
