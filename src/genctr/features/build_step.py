"""The feature-build step of a pipeline: where its Spark job runs, and how the build reaches the artifact.

    spark_submit  spark_master            Spark runs                    events from         build written to
    local         local[*] (default)      inside this pod               the events artifact the build artifact
    local         spark://, sc://, k8s:// a cluster this pod drives     a shared place (1)  <shared>/features (2)
    operator      (not used)              a SparkApplication (Kubeflow  a shared place (1)  <shared>/features (2)
                                          Spark Operator)

``shared`` is the step's ``spark_build_uri``: an object-store URI (``s3://``, ``gs://``; KFP's
``minio://`` is S3) or, for a cluster this pod drives, a path every node mounts at the same place.

(1) A cluster's executors cannot read this pod's disk: the events artifact's own URI is used when
    it is on an object store, else the pod copies the events to ``<shared>/events`` first.
(2) Likewise the build: Spark writes it to the shared place, and the pod then copies it into the
    build artifact, so the steps after this one read it as they read a local build.

A behaviour log (the ingest step's ``behaviours`` artifact) travels as the events do, to
``<shared>/behaviours`` where it must be copied; one without rows is no log at all.
"""
from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from genctr.config import FeatureConfig
from genctr.errors import ConfigError, describe

log = logging.getLogger(__name__)

SUBMIT_MODES = ("local", "operator")
# artifact-store schemes -> the fsspec/Spark scheme of the same bytes (KFP's MinIO speaks S3)
OBJECT_STORES = {"s3": "s3", "s3a": "s3", "minio": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfss"}


def run_build_step(events_path: str, events_uri: str, build_path: str, cfg: FeatureConfig, *,
                   spark_submit: str = "local", shared_uri: str = "", namespace: str = "genctr", image: str = "",
                   api: Any = None, core: Any = None, timeout_s: float | None = None,
                   behaviours_path: str = "", behaviours_uri: str = "") -> dict[str, Any]:
    """Build features for a pipeline step (see the module docstring); returns the build's stats plus
    ``spark``: how it ran (``submit``, ``master``, ``uri`` of the shared copy, ``application``).

    ``behaviours_path`` / ``behaviours_uri``: the ingest step's behaviour log, staged for a cluster
    as the events are. A log without rows (what the ingest writes for a source without one) or
    none ('') builds exactly what a build without a log does.
    """
    from genctr.features.build_store import download_build
    from genctr.features.spark_build import build_features
    from genctr.features.spark_session import check_master, is_local

    if spark_submit not in SUBMIT_MODES:
        raise ConfigError(f"spark_submit must be one of {SUBMIT_MODES}, got {describe(spark_submit)}")
    master = check_master(cfg.spark_master)
    log_file = behaviours_path if behaviours_path and has_rows(behaviours_path) else None
    if spark_submit == "local" and is_local(master):
        stats = build_features(events_path, build_path, cfg, behaviours=log_file)
        return {**stats, "spark": {"submit": "local", "master": master}}
    shared = _shared_root(shared_uri or _default_shared(events_uri), spark_submit, master)
    events_at = _events_for_cluster(events_path, events_uri, shared)
    log_at = None if log_file is None else _events_for_cluster(log_file, behaviours_uri, shared, "behaviours")
    out = f"{shared}/features"
    info: dict[str, Any] = {"submit": spark_submit, "uri": out}
    if spark_submit == "operator":
        from genctr.features.spark_application import IMAGE, FeatureBuildApp, check_manifest, render
        from genctr.features.spark_operator import run_application

        app = FeatureBuildApp(events=events_at, out=out, behaviours=log_at or "", features=cfg, namespace=namespace,
                              image=image or IMAGE)
        run = run_application(check_manifest(render(app)), api, core=core, timeout_s=timeout_s)
        info.update(application=f"{run.namespace}/{run.name}", seconds=round(run.seconds, 1))
    else:
        build_features(events_at, out, cfg, behaviours=log_at)
        info["master"] = master
    download_build(out, build_path)
    stats = _read_stats(build_path)
    log.info("feature build from %s copied into %s", out, build_path)
    return {**stats, "spark": info}


def _default_shared(events_uri: str) -> str:
    """Without ``spark_build_uri``: a place under the storage root ($GENCTR_STORAGE_ROOT) named by
    the events artifact, so a rerun on the same events reuses it and the step's inputs stay
    the same from run to run (KFP caches by them); '' where the root is this machine's disk."""
    import hashlib

    from genctr.storage import storage_layout

    layout = storage_layout()
    if not layout.is_remote:
        return ""
    return layout.build(f"spark-{hashlib.sha256(events_uri.encode()).hexdigest()[:16]}")


def _shared_root(shared_uri: str, spark_submit: str, master: str) -> str:
    """The shared place as an fsspec URI (``minio://`` as ``s3://``) or an absolute local path."""
    from genctr.features.build_store import Location

    why = "a SparkApplication's pods" if spark_submit == "operator" else f"the executors of {master}"
    root = (shared_uri or "").strip().rstrip("/")
    if not root:
        raise ConfigError(f"{why} cannot read or write this pod's disk: set spark_build_uri to an object-store "
                          "URI they reach (e.g. s3://bucket/genctr/builds/<run>), or an object-store storage "
                          "root (storage_root / $GENCTR_STORAGE_ROOT), under which the build is staged")
    scheme = urlsplit(root).scheme
    if "://" in root and scheme != "file":
        if scheme not in OBJECT_STORES:
            raise ConfigError(f"spark_build_uri {describe(root)} must be an object-store URI (s3://, gs://) "
                              f"that {why} reach")
        return f"{OBJECT_STORES[scheme]}://{root.split('://', 1)[1]}"
    if spark_submit == "operator":
        raise ConfigError(f"spark_build_uri {describe(root)}: {why} mount no local path; give an object-store URI")
    return Location.parse(root).path  # a path every node mounts at the same place (NFS, a shared volume)


def has_rows(path: str) -> bool:
    """Whether the Parquet file or directory at ``path`` holds a row (from its footers); True when
    they cannot be read, so that the build's own reader reports what is wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return bool(pq.read_table(path, columns=[]).num_rows)
    except (OSError, pa.ArrowException):
        return True


def _events_for_cluster(events_path: str, events_uri: str, shared: str, name: str = "events") -> str:
    """Where the cluster reads the events (or the log, ``name``): their own object-store URI, else a
    copy under ``shared``."""
    from genctr.features.build_store import Location

    scheme = urlsplit(events_uri or "").scheme
    if scheme in OBJECT_STORES:
        return f"{OBJECT_STORES[scheme]}://{events_uri.split('://', 1)[1]}"
    dest = Location.parse(shared).join(name)
    log.info("copying %s %s to %s for the cluster", name, events_path, dest.uri)
    if dest.fs.exists(dest.path):
        dest.fs.rm(dest.path, recursive=True)
    dest.fs.put(events_path, dest.path, recursive=os.path.isdir(events_path))
    return dest.uri


def _read_stats(build_path: str) -> dict[str, Any]:
    import json

    from genctr.features.layout import BuildLayout

    return dict(json.loads(BuildLayout(build_path).stats.read_text()))
