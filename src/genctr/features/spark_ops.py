"""DataFrame transforms of the feature build (pure Spark SQL: windows, joins, array functions).

Every function takes and returns Spark DataFrames and writes nothing; ``spark_build`` owns
I/O. Column types follow ``genctr.features.layout``.
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from genctr.features.layout import FIRST_ID, OOV

_EPS = 1e-9  # keeps floor(100 * 0.29) == 29: binary fractions land just below the integer


def split_and_history(events: DataFrame, split: tuple[float, float, float]) -> DataFrame:
    """Add ``split``, ``hist_end`` and ``last_beh_time`` to canonical events.

    Split: a user's n impressions ordered by (event_time, request_id) get ranks 1..n;
    rank <= c1 is train, rank <= c2 valid, the rest test, where
    ``c1 = max(1, floor(n * f_train))`` and ``c2 = max(c1, floor(n * (f_train + f_valid)))``.
    So every user has at least one training impression, and a user with few impressions
    may have no valid or test rows.

    History: behaviours are the clicked impressions; ``hist_end`` counts the user's
    behaviours with event_time strictly below this impression's (a RANGE frame ending one
    second earlier: times are integer seconds), ``last_beh_time`` is the latest of them or -1.
    """
    by_user = Window.partitionBy("user_id").orderBy("event_time", "request_id")
    whole_user = by_user.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    # same partitioning and a prefix of the ordering above: Spark sorts once for both
    earlier = (Window.partitionBy("user_id").orderBy("event_time")
               .rangeBetween(Window.unboundedPreceding, -1))
    n = F.col("_n")
    c1 = F.greatest(F.lit(1), F.floor(n * split[0] + _EPS))
    c2 = F.greatest(c1, F.floor(n * (split[0] + split[1]) + _EPS))
    clicked_time = F.when(F.col("clicked") == 1, F.col("event_time"))
    return (
        events.withColumn("_rank", F.row_number().over(by_user))
        .withColumn("_n", F.count(F.lit(1)).over(whole_user))
        .withColumn("_c1", c1).withColumn("_c2", c2)
        .withColumn("split", F.when(F.col("_rank") <= F.col("_c1"), "train")
                    .when(F.col("_rank") <= F.col("_c2"), "valid").otherwise("test"))
        .withColumn("hist_end", F.coalesce(F.sum("clicked").over(earlier), F.lit(0)).cast("int"))
        .withColumn("last_beh_time", F.coalesce(F.max(clicked_time).over(earlier), F.lit(-1)).cast("long"))
        .drop("_rank", "_n", "_c1", "_c2")
    )


VOCABS = {"user": "user_id", "item": "item_id", "category": "category_id"}  # name -> raw column


def fit_vocabs(train: DataFrame) -> DataFrame:
    """(kind, raw_id int64, idx int32) for every vocabulary in ``VOCABS``, fitted on ``train``.

    Indices start at FIRST_ID, by frequency desc then raw id asc. Each vocabulary is
    numbered within its own partition (distinct ids are few next to events).
    """
    counts = [train.groupBy(F.col(c).alias("raw_id")).count().withColumn("kind", F.lit(k))
              for k, c in VOCABS.items()]  # integer keys: cheaper than one exploded string-keyed count
    counts_all = reduce(DataFrame.unionByName, counts)
    order = Window.partitionBy("kind").orderBy(F.desc("count"), F.asc("raw_id"))
    return counts_all.select(
        "kind", F.col("raw_id").cast("long"),
        (F.row_number().over(order) + (FIRST_ID - 1)).cast("int").alias("idx"),
    )


INDEX_COLUMNS = {"user": "user_idx", "item": "item_idx", "category": "cate_idx"}


def apply_vocabs(df: DataFrame, vocabs: DataFrame, kinds: tuple[str, ...] = tuple(VOCABS)) -> DataFrame:
    """Add user_idx, item_idx, cate_idx (int32) for ``kinds``; values unseen in training become OOV.

    Broadcast joins: the events keep their partitioning by user (no shuffle).
    """
    for kind in kinds:
        column, out = VOCABS[kind], INDEX_COLUMNS[kind]
        v = vocabs.filter(F.col("kind") == kind).select(F.col("raw_id").alias(column), F.col("idx").alias(out))
        df = df.join(F.broadcast(v), on=column, how="left") \
            .withColumn(out, F.coalesce(F.col(out), F.lit(OOV)).cast("int"))
    return df


def samples(indexed: DataFrame, max_seq_len: int) -> DataFrame:
    """Layout sample columns (plus ``split``, for partitioning the write)."""
    return indexed.select(
        F.col("request_id").alias("sample_id"), "user_id", "item_id", "user_idx", "item_idx", "cate_idx",
        F.col("price").cast("float").alias("price"), "event_time",
        F.col("clicked").cast("byte").alias("label"), "hist_end",
        F.least(F.col("hist_end"), F.lit(max_seq_len)).cast("int").alias("seq_len"),
        "last_beh_time", "split",
    )


def user_behaviours(indexed: DataFrame) -> DataFrame:
    """One row per user: ``beh`` = time-sorted array of behaviour structs (empty if none).

    Structs sort by their first fields (event_time, request_id), the same order as the split.
    """
    beh = F.when(F.col("clicked") == 1, F.struct(
        "event_time", "request_id", "item_idx", "cate_idx", "item_id", "category_id",
        (F.col("split") == "train").alias("is_train"),
    ))
    return indexed.groupBy("user_id", "user_idx").agg(
        F.sort_array(F.collect_list(beh)).alias("beh"),  # collect_list skips the nulls
        F.max("event_time").alias("last_imp_time"),
    )


def histories(users: DataFrame) -> DataFrame:
    """Layout ``histories`` (unordered; the caller writes it as one file in user_idx order)."""
    return users.select(
        "user_id", "user_idx",
        F.size("beh").cast("int").alias("n_behaviors"),
        F.size(F.filter("beh", lambda b: b["is_train"])).cast("int").alias("n_train_behaviors"),
        F.col("beh.item_idx").cast("array<int>").alias("item_seq"),
        F.col("beh.cate_idx").cast("array<int>").alias("cate_seq"),
        F.col("beh.event_time").cast("array<bigint>").alias("time_seq"),
    )


def _tail(arr: str, n: int) -> Column:
    """Last ``n`` elements, oldest first (slice with a negative start past the head is empty)."""
    return F.slice(arr, F.greatest(F.size(arr) - n + 1, F.lit(1)), n)


def feast_user_behavior_seq(users: DataFrame, max_seq_len: int) -> DataFrame:
    """Raw-id sequences for the Feast ``user_behavior_seq`` view, stamped at the last behaviour."""
    tail = _tail("beh", max_seq_len)
    last_time = F.when(F.size("beh") > 0, F.col("beh")[F.size("beh") - 1]["event_time"]) \
        .otherwise(F.col("last_imp_time"))
    return users.select(
        F.col("user_id").cast("long"),
        F.timestamp_seconds(last_time).alias("event_timestamp"),
        tail["item_id"].cast("array<bigint>").alias("item_seq"),
        tail["category_id"].cast("array<bigint>").alias("cate_seq"),
        F.size(tail).cast("int").alias("seq_len"),
    )


def items(indexed: DataFrame, vocabs: DataFrame) -> DataFrame:
    """Every item seen in any split: category of its latest impression, mean price, first-seen time.

    Items absent from training have item_idx = OOV (several rows may share it). Primitive
    aggregates only, so Spark hash-aggregates (a struct-valued max_by would sort all events).
    """
    agg = indexed.groupBy("item_id", "item_idx").agg(
        F.max_by("category_id", "event_time").alias("category_id"),
        F.avg("price").cast("float").alias("price"),
        F.min("event_time").alias("first_seen"),
    )
    return apply_vocabs(agg, vocabs, kinds=("category",)).select(
        "item_id", "item_idx", "category_id", "cate_idx", "price", "first_seen")


def feast_item_features(items_df: DataFrame) -> DataFrame:
    """Feast ``item_features``: stamped at the item's first impression so point-in-time
    joins find it for every impression of the item."""
    return items_df.select(
        "item_id", F.timestamp_seconds("first_seen").alias("event_timestamp"), "category_id", "price",
    )


def split_stats(timed: DataFrame, max_seq_len: int) -> DataFrame:
    """Per split: rows, clicks, mean seq_len (a handful of rows, for stats.json)."""
    return timed.groupBy("split").agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("clicked").cast("long")).alias("clicks"),
        F.avg(F.least(F.col("hist_end"), F.lit(max_seq_len))).alias("mean_seq_len"),
    )
