"""Transforms of the feature build for a behaviour log (pure Spark SQL, as ``spark_ops``).

With a log, a user's behaviours are their clicked impressions plus the log rows that add one:

* a log row of a user without any impression is dropped (``dropped_unknown_user``);
* one whose (user_id, item_id, event_time) equals a clicked impression's is that click
  (``duplicates_of_clicks``: MovieLens' log repeats every clicked rating); clicks are never dropped;
* of log rows sharing (user_id, item_id, event_time) one is kept, the first by (event_type,
  category_id) (``duplicates_in_log``: a Taobao cart and fav of the same item in the same second);
* the rest are ``used``: each adds one behaviour.

A kept log row is a training-period behaviour (``is_train``: what pretraining and the
vocabularies may see) when its event_time is <= its user's last training impression time and
< the user's first valid/test impression time. A click is one when its impression is in the
training split. Behaviours sort by (event_time, clicks before log rows, request_id or item_id),
and the training ones form a prefix of that order: a training log row is strictly earlier than
every valid/test impression (so than every held-out behaviour); a held-out log row is later
than the user's last training impression or no earlier than its first valid/test one, which no
training click follows, and at an equal second it sorts after the clicks.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from genctr.features import spark_ops as ops

FATES = ("used", "dropped_unknown_user", "duplicates_of_clicks", "duplicates_in_log")
_CLICK, _LOG = 0, 1  # behaviour sources, in their order at equal times
_LOG_ORDER_OFFSET = 2**40  # seconds (~35,000 years): a log row's time minus this is below every impression's


def training_bounds(timed: DataFrame) -> DataFrame:
    """Per user: ``_train_until`` (latest training impression time) and ``_heldout_from`` (earliest
    valid/test impression time, null without one)."""
    train = F.col("split") == "train"
    return timed.groupBy("user_id").agg(
        F.max(F.when(train, F.col("event_time"))).alias("_train_until"),
        F.min(F.when(~train, F.col("event_time"))).alias("_heldout_from"),
    )


def classify_log(timed: DataFrame, log: DataFrame) -> DataFrame:
    """Every log row with its ``_fate`` (one of :data:`FATES`) and ``is_train``.

    ``timed`` holds the impressions with their ``split``; every user of it has a training
    impression, so a null ``_train_until`` marks a log row of an unknown user.
    """
    clicks = (timed.filter(F.col("clicked") == 1).select("user_id", "item_id", "event_time").distinct()
              .withColumn("_click", F.lit(True)))
    rows = (log.join(training_bounds(timed), on="user_id", how="left")
            .join(clicks, on=["user_id", "item_id", "event_time"], how="left"))
    same = Window.partitionBy("user_id", "item_id", "event_time").orderBy("event_type", "category_id")
    known = F.col("_train_until").isNotNull()
    fate = (F.when(~known, "dropped_unknown_user").when(F.col("_click").isNotNull(), "duplicates_of_clicks")
            .when(F.row_number().over(same) > 1, "duplicates_in_log").otherwise("used"))
    t = F.col("event_time")
    is_train = known & (t <= F.col("_train_until")) & (F.col("_heldout_from").isNull() | (t < F.col("_heldout_from")))
    return rows.select("user_id", "item_id", "category_id", "event_time", fate.alias("_fate"),
                       is_train.alias("is_train"))


def log_stats(classified: DataFrame) -> dict[str, int]:
    """``{rows, used, dropped_unknown_user, duplicates_of_clicks, duplicates_in_log}`` (one small job)."""
    row = classified.agg(F.count(F.lit(1)).alias("rows"),
                         *[F.sum((F.col("_fate") == f).cast("long")).alias(f) for f in FATES]).first()
    assert row is not None  # a global aggregate always has one row
    return {k: int(row[k] or 0) for k in ("rows", *FATES)}


def with_log(timed: DataFrame, classified: DataFrame) -> DataFrame:
    """The impressions of ``timed`` (``_imp`` true) and the ``used`` log rows of ``classified``
    (``_imp`` false) in one frame, ``hist_end`` / ``last_beh_time`` counted over both, and
    ``is_train`` on every row (an impression's: its split is train).

    One window over impressions and log rows (a RANGE frame ending one second before each
    row's time, as in ``spark_ops.split_and_history``). Log rows carry typed non-null fillers in
    the impression columns (request_id 0, split ''), so the union keeps each column's nullability.
    """
    base = timed.drop("hist_end", "last_beh_time")
    impressions = base.select("*", (F.col("split") == "train").alias("is_train"), F.lit(True).alias("_imp"),
                              F.col("clicked").cast("int").alias("_beh"))
    own = ("user_id", "item_id", "category_id", "event_time")
    fillers = [(F.lit("") if t == "string" else F.lit(0).cast(t)).alias(c) for c, t in base.dtypes if c not in own]
    logs = classified.filter(F.col("_fate") == "used").select(
        *own, *fillers, "is_train", F.lit(False).alias("_imp"), F.lit(1).alias("_beh"))
    earlier = Window.partitionBy("user_id").orderBy("event_time").rangeBetween(Window.unboundedPreceding, -1)
    beh_time = F.when(F.col("_beh") == 1, F.col("event_time"))
    return (impressions.unionByName(logs)
            .withColumn("hist_end", F.coalesce(F.sum("_beh").over(earlier), F.lit(0)).cast("int"))
            .withColumn("last_beh_time", F.coalesce(F.max(beh_time).over(earlier), F.lit(-1)).cast("long"))
            .drop("_beh"))


def vocab_rows(rows: DataFrame) -> DataFrame:
    """What the vocabularies are fitted on: training impressions and training-period log rows."""
    return rows.filter(F.col("is_train")).select(*ops.VOCABS.values())


def _struct(source: int, key: str) -> Column:
    """A behaviour; structs sort by their fields in order: time, source, request_id / item_id."""
    return F.struct(F.col("event_time"), F.lit(source).alias("_src"), F.col(key).cast("long").alias("_key"),
                    "item_idx", "cate_idx", "item_id", "category_id", "is_train")


def user_behaviours(indexed: DataFrame) -> DataFrame:
    """``spark_ops.user_behaviours`` over the clicks and log rows of indexed :func:`with_log` rows:
    one row per user, ``beh`` time-sorted (empty if none), ``last_imp_time``."""
    imp = F.col("_imp")
    beh = F.when(imp & (F.col("clicked") == 1), _struct(_CLICK, "request_id")).when(~imp, _struct(_LOG, "item_id"))
    return indexed.groupBy("user_id", "user_idx").agg(
        F.sort_array(F.collect_list(beh)).alias("beh"),  # collect_list skips the nulls
        F.max(F.when(imp, F.col("event_time"))).alias("last_imp_time"),
    )


def items(indexed: DataFrame, vocabs: DataFrame) -> DataFrame:
    """``spark_ops.items`` over indexed :func:`with_log` rows: every item of the impressions as
    there, plus the items only the log has (category of their latest log row, price 0.0 = unknown,
    first seen at their first log row). One aggregation, primitive aggregates only."""
    imp = F.col("_imp")
    # a log row orders below every impression: the category is the latest impression's where there is one
    order = F.when(imp, F.col("event_time")).otherwise(F.col("event_time") - F.lit(_LOG_ORDER_OFFSET))
    agg = indexed.groupBy("item_id", "item_idx").agg(
        F.max_by("category_id", order).alias("category_id"),
        F.when(F.max(imp), F.avg(F.when(imp, F.col("price")))).otherwise(F.lit(0.0)).cast("float").alias("price"),
        F.coalesce(F.min(F.when(imp, F.col("event_time"))), F.min("event_time")).alias("first_seen"),
    )
    return ops.apply_vocabs(agg, vocabs, kinds=("category",)).select(
        "item_id", "item_idx", "category_id", "cate_idx", "price", "first_seen")
