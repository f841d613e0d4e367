"""Canonical events into Spark: every check runs on the columns as stored, before any cast.

A cast hides bad input (Spark try_casts the double 369.5 to the long 369 and a label 0.7 to
0; a time in nanoseconds overflows only when a later step makes it a timestamp), so each
column is checked by its stored type with Spark expressions, in one aggregate pass:

    ids, clicked, event_time   whole numbers in int64 (doubles below 2**53, where they are
                               exact); strings and decimals are parsed as decimals first
    clicked                    0 or 1 (booleans allowed)
    event_time                 integers in ``time_unit`` (converted to seconds exactly), or a
                               Parquet timestamp/date; seconds in [1990-01-01, now + 1 h]
    price                      optional: finite, in [0, MAX_PRICE]; null means unknown (0.0)

A failure raises DataValidationError naming the column, how many rows fail and a few of
them by ``request_id`` (one more small Spark job, on the failure path only).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from genctr.data.event_time import UNIT_NAMES, check_time_unit, range_error, time_bounds
from genctr.data.schema import EXACT_FLOAT, MAX_PRICE, REQUIRED
from genctr.data.values import MAX_SHOWN, N_EXAMPLES
from genctr.errors import DataValidationError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

INTEGRAL = {"tinyint", "smallint", "int", "bigint"}  # names in DataFrame.dtypes
FLOATING = {"float", "double"}
DATETIME = {"timestamp", "timestamp_ntz", "date"}
ID_COLUMNS = ("request_id", "user_id", "item_id", "category_id")


def events_uri(events: str | Path, what: str = "events") -> str:
    """A local path becomes a file:// URI (it must exist); other URIs (s3a://...) pass through."""
    uri = str(events)
    if "://" in uri:
        return uri
    path = Path(uri).expanduser().absolute()
    if not path.exists():
        raise DataValidationError(f"{what} path {path} does not exist")
    return path.as_uri()


def read_events(spark: SparkSession, events: str | Path, *, time_unit: str = "s",
                now: int | None = None, label: str | None = None) -> DataFrame:
    """Events at ``events`` (Parquet), checked, in canonical types: ids/event_time long
    (seconds), clicked int, price double. ``now`` (epoch seconds) bounds future times;
    ``label`` names the events in errors (default ``events``: a staged copy has a temporary name)."""
    ticks = check_time_unit(time_unit)
    where = label or str(events)
    df = read_parquet(spark, events, where)
    columns = df.columns
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataValidationError(
            f"events at {where}: missing required column(s) {missing}; expected {list(REQUIRED)}")
    cols = _Columns(df, where, time_unit, ticks)
    _check(df, cols, where, now)
    return df.select(*[cols.value[c].alias(c) for c in ID_COLUMNS], cols.seconds.alias("event_time"),
                     cols.value["clicked"].cast("int").alias("clicked"), cols.price.alias("price"))


def read_parquet(spark: SparkSession, path: str | Path, where: str, what: str = "events") -> DataFrame:
    """``spark.read.parquet`` with its schema resolved; a store Spark cannot reach is a ConfigError,
    anything else unreadable a DataValidationError naming ``what`` at ``where``."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from genctr.features.build_store import connector_error

    uri = events_uri(path, what)
    try:
        df = spark.read.parquet(uri)
        _ = df.columns  # over Spark Connect the read is lazy: resolving the schema is what fails
    except (PySparkException, Py4JJavaError) as exc:
        err = connector_error(exc, uri)
        if err is not None:
            raise err from exc
        reason = exc.java_exception.toString() if isinstance(exc, Py4JJavaError) else str(exc)
        raise DataValidationError(f"{what} at {where} could not be read as Parquet: {reason[:200]}") from exc
    return df


class _Columns:
    """Per column: its value in the canonical type and a ``bad`` flag (non-null, unusable)."""

    def __init__(self, df: DataFrame, where: str, time_unit: str, ticks: int) -> None:
        from pyspark.sql import functions as F

        types = dict(df.dtypes)
        self.value: dict[str, Column] = {}
        self.bad: dict[str, Column] = {}
        for c in ID_COLUMNS:
            self.value[c], self.bad[c] = _whole(c, types[c], where)
        if types["clicked"] == "boolean":
            self.value["clicked"], bad = F.col("clicked").cast("long"), F.lit(False)
        else:
            self.value["clicked"], bad = _whole("clicked", types["clicked"], where)
        self.bad["clicked"] = bad | (self.value["clicked"].isNotNull() & ~self.value["clicked"].isin(0, 1))
        t = EventTime(types["event_time"], where, time_unit, ticks)
        self.time_unit, self.ticks, self.seconds = t.unit, t.ticks, t.seconds
        self.value["event_time"], self.bad["event_time"] = t.value, t.bad
        if "price" in df.columns:
            p = F.col("price").try_cast("double")
            self.bad["price"] = F.col("price").isNotNull() & (
                p.isNull() | F.isnan(p) | (p < 0) | (p > MAX_PRICE))
            self.price = F.coalesce(p, F.lit(0.0))
        else:
            self.price = F.lit(0.0)


class EventTime:
    """The stored ``event_time`` column of type ``dtype``: ``value`` (long, in ``unit``), ``bad``
    (non-null, not a whole number), ``seconds`` (long); a timestamp/date column is in seconds."""

    def __init__(self, dtype: str, where: str, time_unit: str, ticks: int, what: str = "events") -> None:
        from pyspark.sql import functions as F

        if dtype in DATETIME:  # a real timestamp: the unit is known
            self.unit, self.ticks = "s", 1
            self.value: Column = F.unix_timestamp(F.col("event_time").cast("timestamp"))
            self.bad: Column = F.lit(False)
        else:
            self.unit, self.ticks = time_unit, ticks
            self.value, self.bad = _whole("event_time", dtype, where, what)
        # exact integer division (decimal, not double: ns values exceed 2**53)
        self.seconds: Column = (self.value if self.ticks == 1
                                else F.floor(self.value.cast("decimal(20,0)") / F.lit(self.ticks)).cast("long"))


def _whole(name: str, dtype: str, where: str, what: str = "events") -> tuple[Column, Column]:
    """(value as long, bad) for a column that must hold whole numbers; bad excludes nulls.
    ``what`` names the input in the error for an unusable type (``events``, ``behaviour log``)."""
    from pyspark.sql import functions as F

    col = F.col(name)
    if dtype in INTEGRAL:
        return col.cast("long"), F.lit(False)
    if dtype in FLOATING:
        value = col.try_cast("long")
        bad = F.isnan(col) | (col % 1 != 0) | (F.abs(col) >= EXACT_FLOAT) | value.isNull()
        return value, col.isNotNull() & bad
    if dtype == "string" or dtype.startswith("decimal"):
        num = col.try_cast("decimal(38,18)")  # 20 integer digits hold any int64
        value = num.try_cast("long")
        return value, col.isNotNull() & (num.isNull() | (num % 1 != 0) | value.isNull())
    raise DataValidationError(f"{what} at {where}: column '{name}' has type {dtype[:MAX_SHOWN]}; "
                              "expected integers (or a timestamp for event_time)")


def _check(df: DataFrame, cols: _Columns, where: str, now: int | None) -> None:
    """One aggregate over the stored columns; raises on the first problem found."""
    from pyspark.sql import functions as F

    lo, hi = time_bounds(now)
    s = cols.seconds
    out_of_range = s.isNotNull() & ~cols.bad["event_time"] & ((s < lo) | (s > hi))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}") for c in REQUIRED],
        *[F.sum(b.cast("long")).alias(f"bad_{c}") for c, b in cols.bad.items()],
        F.sum(out_of_range.cast("long")).alias("time_range"),
        F.min(F.when(out_of_range, cols.value["event_time"])).alias("t_min"),
        F.max(F.when(out_of_range, cols.value["event_time"])).alias("t_max"),
    ).first()
    n = 0 if row is None else row["rows"]
    if row is None or n == 0:
        raise DataValidationError(f"events at {where} hold no rows")
    nulls = {c: row[f"null_{c}"] for c in REQUIRED if row[f"null_{c}"]}
    if nulls:
        raise DataValidationError(f"events at {where}: null values in {nulls}")
    for c, bad in cols.bad.items():
        if row[f"bad_{c}"]:
            what = {"clicked": "must be 0 or 1", "price": f"must be a finite number in [0, {MAX_PRICE:g}]",
                    "event_time": f"must hold whole {UNIT_NAMES[cols.time_unit]} since the epoch",
                    }.get(c, "must hold integers")
            raise DataValidationError(f"events at {where}: column '{c}' {what}: {row[f'bad_{c}']} of {n} rows "
                                      f"do not, e.g. {_examples(df, bad, c)}")
    if row["time_range"]:
        far = max((row["t_min"], row["t_max"]), key=lambda v: abs(v - (lo + hi) / 2 * cols.ticks))
        raise range_error(f"events at {where}", row["time_range"], n, _examples(df, out_of_range, "event_time"),
                          float(far), cols.time_unit, now)


def _examples(df: DataFrame, bad: Column, column: str) -> str:
    """``request_id=7: 369.5; ...`` for the first few offending rows, values cut short."""
    from pyspark.sql import functions as F

    rows = df.filter(bad).select(F.col("request_id").cast("string").alias("r"),
                                 F.col(column).cast("string").alias("v")).limit(N_EXAMPLES).collect()
    return "; ".join(f"request_id={str(r['r'])[:MAX_SHOWN]}: {str(r['v'])[:MAX_SHOWN]}" for r in rows)
