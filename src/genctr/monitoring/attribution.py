"""Click attribution (PySpark): raw clicks credited to the impressions they were on.

    impressions/  (the sink's, or the ad server's)   raw_clicks/  (the click tracker's)
           \\                                          /
            --- (request_id, item_id) --- window ---
                              |
                    clicks/   credited clicks, the clicks schema of genctr.monitoring.logs
                    attribution.json   the counts below

Rules, in order:

1. Duplicate clicks on a key (a double click, a redelivered batch) count once: the earliest.
2. A key that was never shown is an *orphan*: counted, never credited.
3. A click later than ``window_s`` after its impression is *late*; one more than ``clock_skew_s``
   *before* it is *early* (a clock fault between ad server and click tracker): both counted, never
   credited. Everything else is credited, at most once per impression.

A key shown twice (a logging fault) is credited once, to its earliest showing, and counted as
``duplicate_impressions``. The same job runs on ``local[*]`` and on a Spark cluster
(``spark-submit src/genctr/monitoring/attribution.py --log-dir s3a://... --out ...``); joins and
aggregates only, no Python per row. For the in-memory pandas join of small windows, and its rule
for the same input (no window): :func:`genctr.monitoring.logs.join_clicks` (a test keeps the two
in agreement).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.atomic import publish, write_json
from genctr.config import check_range, coerce_fields
from genctr.monitoring.clicks import RAW_CLICKS
from genctr.monitoring.logs import KEY

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
DEFAULT_WINDOW_S = 86_400  # a click a day after the impression is no longer its effect
COUNTS_FILE = "attribution.json"


@dataclass
class AttributionConfig:
    """The attribution window (seconds after the impression) and the clock-skew tolerance before it."""

    window_s: int = DEFAULT_WINDOW_S
    clock_skew_s: int = 300

    def __post_init__(self) -> None:
        coerce_fields(self, "attribution")
        check_range("attribution.window_s", self.window_s, lo=0)
        check_range("attribution.clock_skew_s", self.clock_skew_s, lo=0)


@dataclass
class AttributionCounts:
    """What became of the raw clicks (``raw_clicks = credited + late + early + orphans + duplicates``)."""

    raw_clicks: int = 0
    credited: int = 0
    late: int = 0  # after the window
    early: int = 0  # before the impression by more than the clock-skew tolerance
    orphans: int = 0  # key never shown
    duplicate_clicks: int = 0  # extra clicks on a key (only its earliest counts)
    duplicate_impressions: int = 0  # extra showings of a key (credited once, to the earliest)
    window_s: int = DEFAULT_WINDOW_S

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Attributed:
    """:func:`attribute`'s result: ``credited`` (request_id, item_id, ts) and the counts. The classified
    clicks behind both are cached (counted once, then written); :meth:`release` frees them."""

    credited: DataFrame
    counts: AttributionCounts
    cached: DataFrame

    def release(self) -> None:
        self.cached.unpersist()


def attribute(impressions: DataFrame, clicks: DataFrame, cfg: AttributionConfig | None = None) -> Attributed:
    """Credit Spark frame ``clicks`` (the clicks schema) to ``impressions`` (needs request_id, item_id, ts).

    Two aggregates by key and one join; the joined clicks are cached, so counting them and writing the
    credited ones costs the join once.
    """
    from pyspark.sql import functions as F

    cfg = cfg or AttributionConfig()
    shown = impressions.groupBy(*KEY).agg(F.min("ts").alias("shown_ts"), F.count(F.lit(1)).alias("n_shown"))
    first = clicks.groupBy(*KEY).agg(F.min("ts").alias("ts"), F.count(F.lit(1)).alias("n_clicks"))
    joined = first.join(shown, on=KEY, how="left")  # one row per clicked key
    lag = F.col("ts") - F.col("shown_ts")
    outcome = (F.when(F.col("shown_ts").isNull(), F.lit("orphan"))
               .when(lag > cfg.window_s, F.lit("late"))
               .when(lag < -cfg.clock_skew_s, F.lit("early"))
               .otherwise(F.lit("credited")))
    classified = joined.withColumn("outcome", outcome).cache()
    per_outcome = classified.groupBy("outcome").agg(F.count(F.lit(1)).alias("keys"),
                                                    F.sum("n_clicks").cast("long").alias("clicks"))
    dup_shown = shown.agg(F.lit("_duplicate_impressions").alias("outcome"),
                          F.coalesce(F.sum(F.col("n_shown") - 1), F.lit(0)).cast("long").alias("keys"),
                          F.lit(0).cast("long").alias("clicks"))
    by = {r["outcome"]: (int(r["keys"]), int(r["clicks"])) for r in per_outcome.unionByName(dup_shown).collect()}
    dup_imp = by.pop("_duplicate_impressions", (0, 0))[0]  # one job for every count
    keys = sum(k for k, _ in by.values())
    raw = sum(c for _, c in by.values())
    counts = AttributionCounts(raw_clicks=raw, credited=by.get("credited", (0, 0))[0],
                               late=by.get("late", (0, 0))[0], early=by.get("early", (0, 0))[0],
                               orphans=by.get("orphan", (0, 0))[0], duplicate_clicks=raw - keys,
                               duplicate_impressions=dup_imp, window_s=cfg.window_s)
    credited = (classified.where(F.col("outcome") == "credited")
                .select(F.col("request_id").cast("string"), F.col("item_id").cast("long"), F.col("ts").cast("long")))
    return Attributed(credited, counts, classified)


def _read(spark: SparkSession, directory: str, columns: dict[str, str]) -> DataFrame:
    """The part files of one table (empty with these columns when there are none)."""
    from pyspark.sql.utils import AnalysisException

    schema = ", ".join(f"{c} {t}" for c, t in columns.items())
    local = "://" not in directory or directory.startswith("file://")
    if local and not any(Path(directory.removeprefix("file://")).glob("part-*.parquet")):
        return spark.createDataFrame([], schema)
    try:  # part files only: a writer's hidden temporaries (".part-....tmp") never match
        return spark.read.schema(schema).option("pathGlobFilter", "part-*.parquet").parquet(directory)
    except AnalysisException as exc:  # a URI without any part yet
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            return spark.createDataFrame([], schema)
        raise


def run_attribution(log_dir: str | Path, out_dir: str | Path, cfg: AttributionConfig | None = None, *,
                    spark: SparkSession | None = None, master: str = "local[*]") -> AttributionCounts:
    """Credit ``<log_dir>/raw_clicks`` to ``<log_dir>/impressions``: writes ``<out_dir>/clicks/`` (replaced
    whole, never half) and ``<out_dir>/attribution.json``. ``log_dir``: any path Spark reads
    (local, ``s3a://``...); ``out_dir``: a local directory. ``spark``: default :func:`get_spark` on
    ``master`` (a cluster or Connect master must share ``out_dir``'s disk: its executors write there)."""
    from genctr.features.spark_session import get_spark

    cfg = cfg or AttributionConfig()
    root = str(log_dir).rstrip("/")
    out = Path(out_dir)
    if "://" not in root and not any(Path(root, RAW_CLICKS).glob("part-*.parquet")):
        counts = AttributionCounts(window_s=cfg.window_s)  # nothing to credit: no Spark job at all
        out.mkdir(parents=True, exist_ok=True)
        empty = Path(tempfile.mkdtemp(prefix=".clicks-", dir=out))
        publish(empty, out / "clicks")  # replaces an earlier run's credited clicks too
        write_json(out / COUNTS_FILE, counts.to_dict())
        return counts
    spark = spark or get_spark(master, app_name="genctr-attribution")
    impressions = _read(spark, f"{root}/impressions", {"request_id": "string", "item_id": "long", "ts": "long"})
    clicks = _read(spark, f"{root}/{RAW_CLICKS}", {"request_id": "string", "item_id": "long", "ts": "long"})
    result = attribute(impressions, clicks, cfg)
    counts = result.counts
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".clicks-", dir=out) as tmp:
            staged = Path(tmp) / "clicks"
            result.credited.coalesce(max(1, min(8, counts.credited // 1_000_000 + 1))).write.parquet(str(staged))
            for extra in list(staged.glob(".*.crc")) + list(staged.glob("_*")):  # Spark's side files: not parts
                extra.unlink()
            publish(staged, out / "clicks")
    finally:
        result.release()
    write_json(out / COUNTS_FILE, counts.to_dict())
    log.info("attributed clicks of %s: %s", log_dir, counts.to_dict())
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m genctr.monitoring.attribution`` or ``spark-submit`` this file."""
    p = argparse.ArgumentParser(description="Credit the A/B logs' raw clicks to their impressions (PySpark).")
    p.add_argument("--log-dir", required=True, help="A/B log directory with impressions/ and raw_clicks/")
    p.add_argument("--out", required=True, help="local directory for clicks/ and attribution.json")
    p.add_argument("--window-s", type=int, default=DEFAULT_WINDOW_S, help="attribution window after the impression")
    p.add_argument("--clock-skew-s", type=int, default=AttributionConfig.clock_skew_s)
    p.add_argument("--master", default=None, help="Spark master; default: spark-submit's --master, else local[*]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from genctr.errors import GenCTRError
    from genctr.features.spark_session import get_spark

    try:
        cfg = AttributionConfig(window_s=args.window_s, clock_skew_s=args.clock_skew_s)
    except GenCTRError as exc:
        p.error(str(exc))
    spark = get_spark(args.master, app_name="genctr-attribution")
    try:
        counts: dict[str, Any] = run_attribution(args.log_dir, args.out, cfg, spark=spark).to_dict()
    finally:
        spark.stop()
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["COUNTS_FILE", "DEFAULT_WINDOW_S", "Attributed", "AttributionConfig", "AttributionCounts", "attribute",
           "run_attribution"]
