"""Events -> samples, per-user histories, vocabularies and splits (PySpark).

Reads canonical events (Parquet, ``genctr.data.schema`` columns) and writes a build laid out
as ``genctr.features.layout`` describes. Events and build are local paths or fsspec URIs
(``s3://bucket/...``); ``genctr.features.build_store`` says how Spark and this process reach
them for each master: ``local[*]``, a standalone cluster (``spark://``), Spark Connect
(``sc://``: only the DataFrame API is used, no SparkContext), or ``spark-submit``'s master.
The build is atomic: it is written beside ``out_dir`` and renamed onto it only once complete
(on an object store, copied with ``stats.json`` last), so a failed build leaves nothing at
``out_dir`` and an earlier build stays untouched.

    spark-submit src/genctr/features/spark_build.py --events EVENTS --out OUT [--master M] [--behaviours LOG]
    python -m genctr.features.spark_build --events EVENTS --out OUT [--master sc://host:15002]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.config import FeatureConfig
from genctr.errors import ConfigError, GenCTRError
from genctr.features.build_store import BuildWriter, Location, check_output, events_location, spark_io
from genctr.features.layout import FIRST_ID, SPLITS, BuildLayout
from genctr.features.spark_events import read_events

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("genctr.features.spark_build")  # by name: spark-submit runs this file as __main__

FORMAT_VERSION = 1
LAYOUT = BuildLayout("")  # relative names (samples/train, ...); a BuildWriter places them


def build_features(events: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: FeatureConfig,
                   spark: SparkSession | None = None,
                   behaviours: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Build features from the canonical events at ``events`` into ``out_dir``; returns stats.

    Raises ConfigError for an unusable ``out_dir`` or master and DataValidationError for missing
    or malformed events (checked before any cast: ``genctr.features.spark_events``); numeric
    event times are in ``cfg.time_unit``. ``spark`` defaults to a session built from ``cfg``
    (left running for reuse; the caller stops it). A crash that kills the process outright
    (SIGKILL) can leave a hidden ``.<name>.*.tmp`` sibling behind; ``out_dir`` itself is never
    half-written. ``behaviours`` is an optional behaviour log (Parquet, ``genctr.data.behaviours``,
    times in ``cfg.time_unit``; checked like the events: ``genctr.features.spark_behaviours``)
    whose rows join the clicked impressions as behaviours (``genctr.features.spark_log_ops``).
    """
    from genctr.features.spark_session import get_spark, session_is_local

    target = Location.parse(out_dir)
    check_output(target)
    source = events_location(events)  # a missing input fails before paying for a Spark start-up
    log_source = None if behaviours is None else events_location(behaviours, "behaviour log")
    if spark is None:
        spark = get_spark(cfg.spark_master, shuffle_partitions=cfg.shuffle_partitions,
                          driver_memory=cfg.spark_driver_memory)
    # the build's partitioning is its config's, whatever an earlier get_spark() on this session set:
    # the same config writes the same files (row order, and so training order, follows partitioning)
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    writer = BuildWriter(target, spark_local=session_is_local(spark))
    cached: list[DataFrame] = []
    try:
        events_df = read_events(spark, writer.events_for_spark(source), time_unit=cfg.time_unit, label=source.uri)
        log_df = None
        if log_source is not None:
            from genctr.features.spark_behaviours import read_behaviours

            log_df = read_behaviours(spark, writer.events_for_spark(log_source, "behaviours"),
                                     time_unit=cfg.time_unit, label=log_source.uri)
        stats = _build_into(events_df, writer, cfg, cached, log_df)
        writer.publish()
    except BaseException:
        writer.discard()
        raise
    finally:
        for df in cached:
            df.unpersist()
    log.info("feature build written to %s: %s", target.uri, json.dumps(stats["splits"]))
    return stats


def _build_into(events: DataFrame, out: BuildWriter, cfg: FeatureConfig,
                cached: list[DataFrame], log: DataFrame | None = None) -> dict[str, Any]:
    """Compute and write every table of the layout through ``out``.

    Frames read more than once are persisted and appended to ``cached`` for the caller to
    release. The events are shuffled and sorted by user once (split + history windows);
    vocabulary joins are broadcast, so later per-user aggregations need no shuffle. A behaviour
    ``log`` costs its joins with the impressions and one more per-user sort (the histories are
    counted again over clicks and log rows); without one, the build is what it always was.
    """
    from pyspark.sql import functions as F

    from genctr.features import spark_log_ops as lops
    from genctr.features import spark_ops as ops

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist())  # MEMORY_AND_DISK
        return df

    L, lay = cfg.max_seq_len, LAYOUT
    clock = _Clock()
    timed = keep(ops.split_and_history(events, cfg.split))
    scaffolding = [timed]  # what only the samples need
    log_stats = None
    if log is None:
        train = timed.filter(F.col("split") == "train")
    else:  # ``timed`` becomes impressions and log rows (``_imp``), the histories counted over both
        classified = keep(lops.classify_log(timed, log))
        log_stats = lops.log_stats(classified)
        timed = keep(lops.with_log(timed, classified))
        scaffolding += [classified, timed]
        train = lops.vocab_rows(timed)
        clock.lap("behaviour log")
    vocabs = keep(ops.fit_vocabs(train))
    indexed = keep(ops.apply_vocabs(timed, vocabs))
    impressions = indexed if log is None else indexed.filter(F.col("_imp"))
    samples = ops.samples(impressions, L)
    for split in SPLITS:  # filtered scans of the cached frame: cheaper than a partitioned write's sort
        _write(samples.filter(F.col("split") == split).drop("split"), out, lay.samples(split))
        if split == SPLITS[0]:
            out.check_visible(lay.samples(split))  # before hours of work land where nobody reads them
    clock.lap("samples")
    for df in scaffolding:
        df.unpersist()  # ``indexed`` is materialised now and holds all that follows needs

    users = keep(ops.user_behaviours(indexed) if log is None else lops.user_behaviours(indexed))
    # one file in user_idx order: the CSR row order never depends on how a reader lists files
    _write(ops.histories(users), out, lay.histories, sort_by=("user_idx", "user_id"))
    _write(ops.feast_user_behavior_seq(users, L), out, lay.feast_user)
    clock.lap("histories")
    items = keep(ops.items(indexed, vocabs) if log is None else lops.items(indexed, vocabs))
    _write(items.drop("first_seen"), out, lay.items, sort_by=("item_idx", "item_id"))
    _write(ops.feast_item_features(items), out, lay.feast_item, sort_by=("item_id",))
    _write_by(vocabs, "kind", {k: lay.vocab(k) for k in ops.VOCABS}, out, sort_by=("kind", "idx"))
    clock.lap("items+vocab")

    counts = {k: out.rows(lay.vocab(k)) for k in ops.VOCABS}
    stats = _stats(ops.split_stats(impressions, L).collect(), counts, out.rows(lay.items), cfg, log_stats)
    out.write_text(lay.stats, json.dumps(stats, indent=2, sort_keys=True) + "\n")
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


def _write(df: DataFrame, out: BuildWriter, rel: Path, sort_by: tuple[str, ...] | None = None) -> None:
    """Write Parquet; ``sort_by`` makes one sorted file (for tables of ids, not of events)."""
    if sort_by is not None:
        df = df.coalesce(1).sortWithinPartitions(*sort_by)
    uri = out.spark_uri(rel)
    with spark_io(uri):
        df.write.mode("error").parquet(uri)


def _write_by(df: DataFrame, column: str, dest: dict[str, Path], out: BuildWriter,
              sort_by: tuple[str, ...] | None = None) -> None:
    """One pass partitioned by ``column``; each ``column=<value>`` folder is moved to ``dest[value]``.

    A value without rows still gets a readable, typed, empty table.
    """
    staging = next(iter(dest.values())).parent / f"_by_{column}"
    if sort_by is not None:
        df = df.coalesce(1).sortWithinPartitions(*sort_by)
    uri = out.spark_uri(staging)
    with spark_io(uri):
        df.write.partitionBy(column).parquet(uri)
    for value, path in dest.items():
        part = staging / f"{column}={value}"
        if out.exists(part):
            out.move(part, path)
        else:
            _write(df.drop(column).limit(0).coalesce(1), out, path)
    out.remove(staging)


def _stats(rows: list[Any], vocab_counts: dict[str, int], n_items: int, cfg: FeatureConfig,
           log_stats: dict[str, int] | None = None) -> dict[str, Any]:
    """stats.json (``genctr.features.layout``); ``behaviour_log`` only for a build with a log."""
    per = {r["split"]: r for r in rows}
    splits = {}
    for s in SPLITS:
        r = per.get(s)
        n, clicks = (int(r["rows"]), int(r["clicks"])) if r else (0, 0)
        splits[s] = {"rows": n, "clicks": clicks, "click_rate": clicks / n if n else 0.0,
                     "mean_seq_len": float(r["mean_seq_len"]) if r else 0.0}
    stats: dict[str, Any] = {
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
    if log_stats is not None:
        stats["n_behaviors"] += log_stats["used"]  # each used log row adds one behaviour to the clicks
        stats["behaviour_log"] = log_stats
    return stats


def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def parser() -> argparse.ArgumentParser:
    """The command line of this file (also what a SparkApplication's ``arguments`` must parse with)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", required=True, help="canonical events: a Parquet file or directory, path or URI")
    p.add_argument("--out", required=True, help="build directory to (re)place: path or URI (s3://bucket/...)")
    p.add_argument("--behaviours", default=None,
                   help="optional behaviour log (Parquet: user_id, item_id, category_id, event_time, event_type), "
                        "path or URI; its rows join the clicked impressions as behaviours")
    p.add_argument("--master", default=None,
                   help="Spark master (local[*], spark://host:port, sc://host:port); default: spark-submit's "
                        "--master, else local[*]")
    p.add_argument("--max-seq-len", type=int, default=FeatureConfig.max_seq_len)
    p.add_argument("--split", type=float, nargs=3, default=FeatureConfig.split,
                   metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--shuffle-partitions", type=int, default=FeatureConfig.shuffle_partitions)
    p.add_argument("--driver-memory", default=FeatureConfig.spark_driver_memory)
    p.add_argument("--time-unit", default=FeatureConfig.time_unit, choices=("s", "ms", "us", "ns"),
                   help="unit of numeric event_time in the events (converted to seconds)")
    p.add_argument("--conf", type=_conf_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark setting (repeatable); over Spark Connect only runtime SQL settings")
    return p


def config_from_args(args: argparse.Namespace) -> FeatureConfig:
    """The FeatureConfig a parsed command line describes (ConfigError for bad values)."""
    from genctr.features.spark_session import check_master

    return FeatureConfig(max_seq_len=args.max_seq_len, split=tuple(args.split),
                         spark_master=check_master(args.master) if args.master else "local[*]",
                         spark_driver_memory=args.driver_memory, shuffle_partitions=args.shuffle_partitions,
                         time_unit=args.time_unit)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m genctr.features.spark_build`` or ``spark-submit`` this file.

    Exit status 0 with the stats as JSON on stdout; 2 with the error logged for a problem the
    user can fix (bad events, an unreachable master or store).
    """
    p = parser()
    args = p.parse_args(argv)
    from genctr.logging_setup import setup_logging

    setup_logging()
    from genctr.features.spark_session import get_spark

    try:
        cfg = config_from_args(args)
        master = cfg.spark_master if args.master else None  # None: spark-submit's --master
        check_output(Location.parse(args.out))
        events_location(args.events)  # fail before paying for a Spark start-up
        if args.behaviours:
            events_location(args.behaviours, "behaviour log")
    except GenCTRError as exc:
        p.error(str(exc))
    try:
        spark = get_spark(master, shuffle_partitions=cfg.shuffle_partitions, driver_memory=cfg.spark_driver_memory,
                          conf=dict(args.conf))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        stats = build_features(args.events, args.out, cfg, spark=spark, behaviours=args.behaviours or None)
    except GenCTRError as exc:
        log.error("%s", exc)
        return 2
    finally:
        spark.stop()
    print(json.dumps(stats, indent=2, sort_keys=True))  # the command's result (logs go to stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
