"""Feast: register the definitions of ``feature_repo/`` against one feature build and load the
online store; read behaviour sequences back for serving.

``materialize`` never touches the checked-in repository: it renders a ``feature_store.yaml``
with absolute paths (registry, SQLite file) or the given Redis address into a working
directory of its own, loads ``feature_definitions.py`` as a fresh module, points its file
sources at the build's Feast tables, ``apply``s and writes every feature view online. Two
runs with different working directories cannot collide.
"""
from __future__ import annotations

import importlib.util
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from genctr.atomic import write_text
from genctr.errors import ArtifactError, ConfigError
from genctr.features.layout import BuildLayout

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

DEFAULT_REPO_DIR = Path(__file__).resolve().parents[3] / "feature_repo"
USER_VIEW = "user_behavior_seq"
SEQ_FEATURES = ("item_seq", "cate_seq", "seq_len")
_TEMPLATES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}
_PANDAS_DTYPES = {"Int64": "int64", "Int32": "int32", "Float32": "float32", "Float64": "float64"}


def materialize(build_dir: str | Path, repo_dir: str | Path = DEFAULT_REPO_DIR,
                online: str = "sqlite", redis_url: str = "localhost:6379",
                work_dir: str | Path | None = None, method: str = "write",
                ) -> FeatureStore:
    """Apply the Feast definitions to the build at ``build_dir`` and fill the online store.

    ``work_dir`` (default ``<build_dir>/feast_store/<online>``: replaced with the build)
    receives the rendered ``feature_store.yaml``, the registry and, for SQLite, the online
    store; a serving process opens ``FeatureStore(fs_yaml_file=work_dir/"feature_store.yaml")``.
    ``redis_url`` is Feast's ``host:port[,db=N][,password=...]``. ``method``:
    ``"write"`` pushes each Feast table with ``write_to_online_store`` (the tables already
    hold one latest row per entity, so this is Feast's materialisation without re-reading
    and de-duplicating through the offline store, and faster); ``"materialize"`` runs
    ``FeatureStore.materialize`` from the epoch to now. Returns the ready ``FeatureStore``.
    """
    from feast import FeatureStore

    if online not in _TEMPLATES:
        raise ConfigError(f"online store must be one of {sorted(_TEMPLATES)}, got {online!r}")
    if method not in ("write", "materialize"):
        raise ConfigError(f"method must be 'write' or 'materialize', got {method!r}")
    lay = BuildLayout(Path(build_dir).expanduser().absolute())
    for table in (lay.feast_user, lay.feast_item):
        if not table.exists():
            raise ArtifactError(f"{table} is missing: {lay.root} is not a complete feature build")
    repo = Path(repo_dir).expanduser().absolute()
    work = Path(work_dir).expanduser().absolute() if work_dir else lay.root / "feast_store" / online
    work.mkdir(parents=True, exist_ok=True)
    yaml_path = render_config(repo / _TEMPLATES[online], work, online, redis_url)
    objects = load_definitions(repo / "feature_definitions.py", lay.root)

    store = FeatureStore(repo_path=str(work), fs_yaml_file=yaml_path)
    t0 = time.perf_counter()
    store.apply(objects)
    t1 = time.perf_counter()
    if method == "write":
        _write_online(store)
    else:
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))
    t2 = time.perf_counter()
    log.info("feast: applied %d objects in %.2f s, filled %s online store (%s) in %.2f s; config %s",
             len(objects), t1 - t0, online, method, t2 - t1, yaml_path)
    return store


def render_config(template: Path, work: Path, online: str, redis_url: str) -> Path:
    """Write ``work/feature_store.yaml`` from ``template`` with absolute, run-local paths."""
    if not template.exists():
        raise ConfigError(f"Feast config template {template} does not exist (pass repo_dir=...)")
    cfg: dict[str, Any] = yaml.safe_load(template.read_text()) or {}
    registry = cfg.get("registry")
    registry_path = str(work / "registry.db")
    if isinstance(registry, dict):
        cfg["registry"] = {**registry, "path": registry_path}
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


def load_definitions(path: Path, build_root: Path) -> list[Any]:
    """Import ``feature_definitions.py`` as a fresh module; relative file-source paths are
    resolved against ``build_root`` (absolute paths in the registry: any reader finds them)."""
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
    for src in sources:
        if "://" not in src.path and not Path(src.path).is_absolute():
            src.file_options.uri = str(build_root / src.path)
    return objects


def _write_online(store: FeatureStore) -> None:
    """Push every online feature view's Parquet source into the online store, typed as declared."""
    import pandas as pd
    from feast.infra.offline_stores.file_source import FileSource

    for fv in store.list_feature_views():
        src = fv.batch_source
        if not fv.online or not isinstance(src, FileSource):
            continue
        columns = [*fv.join_keys, src.timestamp_field, *(f.name for f in fv.features)]
        df = pd.read_parquet(src.path, columns=columns)
        # the online store keeps the last write per key: make that the latest row, as
        # materialize() would (the build already writes one row per entity)
        df = df.sort_values(src.timestamp_field, kind="stable").drop_duplicates(list(fv.join_keys), keep="last")
        for f in fv.features:  # e.g. Spark's int32 seq_len -> the declared Int64
            dtype = _PANDAS_DTYPES.get(str(f.dtype))
            if dtype:
                df[f.name] = df[f.name].astype(dtype)
        if len(df):
            store.write_to_online_store(fv.name, df)
        log.info("feast: wrote %d rows of %s online", len(df), fv.name)


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
