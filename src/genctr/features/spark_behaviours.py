"""A behaviour log into Spark: the rules of ``genctr.data.behaviours``, checked on the columns as stored.

As for the events (``genctr.features.spark_events``), every check runs before any cast, in
one aggregate pass over the stored columns:

    user_id, item_id, category_id   whole numbers in int64 (strings/decimals parsed as decimals)
    event_time                      integers in ``time_unit`` (converted to seconds exactly), or a
                                    Parquet timestamp/date; seconds in [1990-01-01, now + 1 h]
    event_type                      strings, not blank, at most MAX_EVENT_TYPE characters

then one more for repeated (user_id, item_id, event_time, event_type) rows, on the converted
values (two times in milliseconds within one second are the same second). A failure raises
DataValidationError naming the column, how many rows fail and a few of them. A log without
rows is a valid log.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from genctr.data.behaviours import BEHAVIOUR_COLUMNS, ID_COLUMNS, MAX_EVENT_TYPE, UNIQUE_KEY
from genctr.data.event_time import UNIT_NAMES, check_time_unit, range_error, time_bounds
from genctr.data.values import MAX_SHOWN, N_EXAMPLES
from genctr.errors import DataValidationError
from genctr.features.spark_events import EventTime, _whole, read_parquet

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

WHAT = "behaviour log"


def read_behaviours(spark: SparkSession, path: str | Path, *, time_unit: str = "s", now: int | None = None,
                    label: str | None = None) -> DataFrame:
    """The log at ``path`` (Parquet), checked, as user_id/item_id/category_id/event_time long
    (seconds) and event_type string. ``now`` and ``label`` as for ``read_events``."""
    from pyspark.sql import functions as F

    ticks = check_time_unit(time_unit)
    where = label or str(path)
    df = read_parquet(spark, path, where, WHAT)
    missing = [c for c in BEHAVIOUR_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{WHAT} at {where}: missing required column(s) {missing}; "
                                  f"expected {list(BEHAVIOUR_COLUMNS)}")
    types = dict(df.dtypes)
    if types["event_type"] != "string":
        raise DataValidationError(f"{WHAT} at {where}: column 'event_type' has type {types['event_type'][:MAX_SHOWN]}; "
                                  "expected strings (e.g. 'cart')")
    value: dict[str, Column] = {}
    bad: dict[str, Column] = {}
    for c in ID_COLUMNS:
        value[c], bad[c] = _whole(c, types[c], where, WHAT)
    t = EventTime(types["event_time"], where, time_unit, ticks, WHAT)
    value["event_time"], bad["event_time"] = t.value, t.bad
    kind = F.col("event_type")
    bad["blank"] = kind.isNotNull() & kind.rlike(r"^\s*$")
    bad["long"] = kind.isNotNull() & (F.length(kind) > MAX_EVENT_TYPE)
    _check(df, value, bad, t, where, now)
    canonical = df.select(*[value[c].alias(c) for c in ID_COLUMNS], t.seconds.alias("event_time"), kind)
    _check_unique(canonical, where)
    return canonical


def _check(df: DataFrame, value: dict[str, Column], bad: dict[str, Column], t: EventTime, where: str,
           now: int | None) -> None:
    """One aggregate over the stored columns; raises on the first problem found."""
    from pyspark.sql import functions as F

    lo, hi = time_bounds(now)
    s = t.seconds
    out_of_range = s.isNotNull() & ~t.bad & ((s < lo) | (s > hi))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}") for c in BEHAVIOUR_COLUMNS],
        *[F.sum(b.cast("long")).alias(f"bad_{c}") for c, b in bad.items()],
        F.sum(out_of_range.cast("long")).alias("time_range"),
        F.min(F.when(out_of_range, value["event_time"])).alias("t_min"),
        F.max(F.when(out_of_range, value["event_time"])).alias("t_max"),
    ).first()
    n = 0 if row is None else row["rows"]
    if row is None or n == 0:
        return  # a log without rows adds no behaviour
    nulls = {c: row[f"null_{c}"] for c in BEHAVIOUR_COLUMNS if row[f"null_{c}"]}
    if nulls:
        column = next(iter(nulls))
        raise DataValidationError(f"{WHAT} at {where}: null values in {nulls}, e.g. "
                                  f"{_examples(df, F.col(column).isNull(), column)}")
    for c, flag in bad.items():
        if row[f"bad_{c}"]:
            column = c if c in BEHAVIOUR_COLUMNS else "event_type"
            what = {"event_time": f"must hold whole {UNIT_NAMES[t.unit]} since the epoch",
                    "blank": "must not be empty or only whitespace",
                    "long": f"must be at most {MAX_EVENT_TYPE} characters"}.get(c, "must hold integers")
            raise DataValidationError(f"{WHAT} at {where}: column '{column}' {what}: {row[f'bad_{c}']} of {n} rows "
                                      f"do not, e.g. {_examples(df, flag, column)}")
    if row["time_range"]:
        far = max((row["t_min"], row["t_max"]), key=lambda v: abs(v - (lo + hi) / 2 * t.ticks))
        raise range_error(f"{WHAT} at {where}", row["time_range"], n, _examples(df, out_of_range, "event_time"),
                          float(far), t.unit, now)


def _check_unique(canonical: DataFrame, where: str) -> None:
    """DataValidationError if two rows share (user_id, item_id, event_time, event_type)."""
    from pyspark.sql import functions as F

    repeated = canonical.groupBy(*UNIQUE_KEY).count().filter(F.col("count") > 1)
    row = repeated.agg(F.count(F.lit(1)).alias("keys"), F.sum(F.col("count") - 1).alias("repeats"),
                       F.min(F.struct(*UNIQUE_KEY)).alias("first")).first()
    if row is None or not row["keys"]:
        return
    first = row["first"]
    key = ", ".join(f"{c}={str(first[c])[:MAX_SHOWN]!r}" if c == "event_type" else f"{c}={first[c]}"
                    for c in UNIQUE_KEY)
    raise DataValidationError(f"{WHAT} at {where}: rows must be unique on {UNIQUE_KEY}; {key} repeats "
                              f"({row['repeats']} repeated rows in all, over {row['keys']} keys); drop the "
                              "repeats or tell them apart by event_type")


def _examples(df: DataFrame, flag: Column, column: str) -> str:
    """``user_id=7, item_id=3: 369.5; ...`` for the first few offending rows, values cut short."""
    from pyspark.sql import functions as F

    rows = df.filter(flag).select(*[F.col(c).cast("string").alias(c) for c in ("user_id", "item_id")],
                                  F.col(column).cast("string").alias("_v")).limit(N_EXAMPLES).collect()
    return "; ".join(f"user_id={str(r['user_id'])[:MAX_SHOWN]}, item_id={str(r['item_id'])[:MAX_SHOWN]}: "
                     f"{str(r['_v'])[:MAX_SHOWN]!r}" for r in rows)
