"""Events -> samples, per-user histories, vocabularies and splits (PySpark).

Reads canonical events (Parquet, ``genctr.data.schema`` columns) and writes a build
directory laid out as ``genctr.features.layout`` describes. The build is atomic: it is
written into a hidden sibling directory and renamed onto ``out_dir`` only once complete,
so a failed build leaves nothing at ``out_dir`` and an earlier build stays untouched.
``out_dir`` must be on the driver's local (or locally mounted) filesystem.

    spark-submit src/genctr/features/spark_build.py --events EVENTS --out OUT [--master M]
    python -m genctr.features.spark_build --events EVENTS --out OUT
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.atomic import publish, temp_path
from genctr.config import FeatureConfig
from genctr.errors import ConfigError, GenCTRError
from genctr.features.layout import FIRST_ID, SPLITS, BuildLayout
from genctr.features.spark_events import events_uri, read_events

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def build_features(events: str | Path, out_dir: str | Path, cfg: FeatureConfig,
                   spark: SparkSession | None = None) -> dict[str, Any]:
    """Build features from the canonical events at ``events`` into ``out_dir``; returns stats.

    Raises ConfigError for an unusable ``out_dir`` and DataValidationError for missing or
    malformed events (checked before any cast: ``genctr.features.spark_events``); numeric
    event times are in ``cfg.time_unit``. ``spark`` defaults to a session built from
    ``cfg`` (left running for reuse; the caller stops it). A crash that kills the process outright (SIGKILL) can leave
    a hidden ``.<name>.tmp-*`` sibling behind; ``out_dir`` itself is never half-written.
    """
    from genctr.features.spark_session import get_spark

    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of output {out}: {exc.strerror or exc}") from exc
    events_uri(events)  # a missing input fails before paying for a Spark start-up
    if spark is None:
        spark = get_spark(cfg.spark_master, shuffle_partitions=cfg.shuffle_partitions,
                          driver_memory=cfg.spark_driver_memory)
    # the build's partitioning is its config's, whatever an earlier get_spark() on this session set:
    # the same config writes the same files (row order, and so training order, follows partitioning)
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    tmp = temp_path(out)
    cached: list[DataFrame] = []
    try:
        stats = _build_into(read_events(spark, events, time_unit=cfg.time_unit), BuildLayout(tmp), cfg, cached)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for df in cached:
            df.unpersist()
    log.info("feature build written to %s: %s", out, json.dumps(stats["splits"]))
    return stats


def _build_into(events: DataFrame, lay: BuildLayout, cfg: FeatureConfig,
                cached: list[DataFrame]) -> dict[str, Any]:
    """Compute and write every table of the layout under ``lay.root``.

    Frames read more than once are persisted and appended to ``cached`` for the caller to
    release. The events are shuffled and sorted by user once (split + history windows);
    vocabulary joins are broadcast, so later per-user aggregations need no shuffle.
    """
    from pyspark.sql import functions as F

    from genctr.features import spark_ops as ops

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist())  # MEMORY_AND_DISK
        return df

    L = cfg.max_seq_len
    clock = _Clock()
    timed = keep(ops.split_and_history(events, cfg.split))
    vocabs = keep(ops.fit_vocabs(timed.filter(F.col("split") == "train")))
    indexed = keep(ops.apply_vocabs(timed, vocabs))
    samples = ops.samples(indexed, L)
    for split in SPLITS:  # filtered scans of the cached frame: cheaper than a partitioned write's sort
        _write(samples.filter(F.col("split") == split).drop("split"), lay.samples(split))
    clock.lap("samples")
    timed.unpersist()  # ``indexed`` is materialised now and holds all that follows needs

    users = keep(ops.user_behaviours(indexed))
    # one file in user_idx order: the CSR row order never depends on how a reader lists files
    _write(ops.histories(users), lay.histories, sort_by=("user_idx", "user_id"))
    _write(ops.feast_user_behavior_seq(users, L), lay.feast_user)
    clock.lap("histories")
    items = keep(ops.items(indexed, vocabs))
    _write(items.drop("first_seen"), lay.items, sort_by=("item_idx", "item_id"))
    _write(ops.feast_item_features(items), lay.feast_item, sort_by=("item_id",))
    _write_by(vocabs, "kind", {k: lay.vocab(k) for k in ops.VOCABS}, sort_by=("kind", "idx"))
    clock.lap("items+vocab")

    counts = {k: _parquet_rows(lay.vocab(k)) for k in ops.VOCABS}
    stats = _stats(ops.split_stats(indexed, L).collect(), counts, _parquet_rows(lay.items), cfg)
    lay.stats.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    clock.lap("stats")
    return stats


class _Clock:
    """Logs the seconds each phase of the build took."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        log.info("feature build: %s took %.1f s", phase, now - self.t)
        self.t = now


def _write(df: DataFrame, path: Path, sort_by: tuple[str, ...] | None = None) -> None:
    """Write Parquet; ``sort_by`` makes one sorted file (for tables of ids, not of events)."""
    if sort_by is not None:
        df = df.coalesce(1).sortWithinPartitions(*sort_by)
    df.write.mode("error").parquet(path.as_uri())


def _parquet_rows(path: Path) -> int:
    """Row count of a written table from its Parquet footers (no Spark job)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in path.glob("*.parquet"))


def _write_by(df: DataFrame, column: str, dest: dict[str, Path], sort_by: tuple[str, ...] | None = None) -> None:
    """One pass partitioned by ``column``; each ``column=<value>`` folder is renamed to ``dest[value]``.

    A value without rows still gets a readable, typed, empty table.
    """
    staging = next(iter(dest.values())).parent / f"_by_{column}"
    if sort_by is not None:
        df = df.coalesce(1).sortWithinPartitions(*sort_by)
    df.write.partitionBy(column).parquet(staging.as_uri())
    for value, path in dest.items():
        part = staging / f"{column}={value}"
        if part.exists():
            part.rename(path)
        else:
            _write(df.drop(column).limit(0).coalesce(1), path)
    shutil.rmtree(staging)


def _stats(rows: list[Any], vocab_counts: dict[str, int], n_items: int, cfg: FeatureConfig) -> dict[str, Any]:
    per = {r["split"]: r for r in rows}
    splits = {}
    for s in SPLITS:
        r = per.get(s)
        n, clicks = (int(r["rows"]), int(r["clicks"])) if r else (0, 0)
        splits[s] = {"rows": n, "clicks": clicks, "click_rate": clicks / n if n else 0.0,
                     "mean_seq_len": float(r["mean_seq_len"]) if r else 0.0}
    return {
        "format_version": FORMAT_VERSION,
        "max_seq_len": cfg.max_seq_len,
        "split_fractions": list(cfg.split),
        "n_events": sum(v["rows"] for v in splits.values()),
        "n_behaviors": sum(v["clicks"] for v in splits.values()),
        "n_users": vocab_counts["user"],  # every user has a training row, so all are in the vocabulary
        "n_items": n_items,
        "vocab_counts": vocab_counts,
        # embedding table sizes: real ids from FIRST_ID on, plus the padding and OOV rows
        "vocab_sizes": {k: v + FIRST_ID for k, v in vocab_counts.items()},
        "splits": splits,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m genctr.features.spark_build`` or ``spark-submit`` this file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", required=True, help="canonical events: a Parquet file or directory")
    p.add_argument("--out", required=True, help="build directory to (re)place")
    p.add_argument("--master", default=None,
                   help="Spark master; default: spark-submit's --master, else local[*]")
    p.add_argument("--max-seq-len", type=int, default=FeatureConfig.max_seq_len)
    p.add_argument("--split", type=float, nargs=3, default=FeatureConfig.split,
                   metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--shuffle-partitions", type=int, default=FeatureConfig.shuffle_partitions)
    p.add_argument("--driver-memory", default=FeatureConfig.spark_driver_memory)
    p.add_argument("--time-unit", default=FeatureConfig.time_unit, choices=("s", "ms", "us", "ns"),
                   help="unit of numeric event_time in the events (converted to seconds)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from genctr.features.spark_session import get_spark

    try:
        cfg = FeatureConfig(max_seq_len=args.max_seq_len, split=tuple(args.split),
                            spark_master=args.master or "local[*]", spark_driver_memory=args.driver_memory,
                            shuffle_partitions=args.shuffle_partitions, time_unit=args.time_unit)
        events_uri(args.events)  # fail before paying for a Spark start-up
    except GenCTRError as exc:
        p.error(str(exc))
    spark = get_spark(args.master, shuffle_partitions=cfg.shuffle_partitions, driver_memory=cfg.spark_driver_memory)
    try:
        stats = build_features(args.events, args.out, cfg, spark=spark)
    except GenCTRError as exc:
        log.error("%s", exc)
        return 2
    finally:
        spark.stop()
    print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
