"""Optional behaviour log: what user sequences are made of, beside the clicked impressions.

Without a log, a user's behaviours are their clicked impressions. A source may also have a log
of other actions (MovieLens: every rating; Taobao UserBehavior: cart, fav and buy), one row
per behaviour:

    user_id      int64   raw user id, as in the events
    item_id      int64   raw item id
    category_id  int64   raw category id of the item
    event_time   int64   seconds since the Unix epoch (UTC), in [1990-01-01, now + 1 h]
    event_type   string  what the user did ("rating", "cart", ...): non-empty, at most
                         MAX_EVENT_TYPE characters, not only whitespace

Validation is that of ``genctr.data.schema``: nothing is rounded or truncated, a null or a
value of the wrong kind is an error naming the column and example rows, and a row repeated on
(user_id, item_id, event_time, event_type) is refused as a repeated request_id is. The feature
build (``genctr.features.spark_behaviours``) applies the same rules in Spark.

Beside events at ``<dir>/<stem>[.parquet|.csv]`` a log lives at ``<dir>/<stem>.behaviours.parquet``
(:func:`behaviours_path`): ``genctr data export --behaviour-log`` writes it there, and the
``events`` source reads it from there unless ``data.behaviour_path`` names another file.
"""
from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genctr.data.event_time import to_epoch_seconds
from genctr.data.schema import whole_numbers
from genctr.data.values import row_examples, show
from genctr.errors import DataValidationError

if TYPE_CHECKING:
    import pyarrow as pa

BEHAVIOUR_COLUMNS = {"user_id": "int64", "item_id": "int64", "category_id": "int64", "event_time": "int64",
                     "event_type": "string"}
ID_COLUMNS = ("user_id", "item_id", "category_id")
UNIQUE_KEY = ["user_id", "item_id", "event_time", "event_type"]  # a row repeated on these is refused
MAX_EVENT_TYPE = 64  # characters: a type, not free text
SUFFIX = ".behaviours.parquet"
EVENT_SUFFIXES = (".parquet", ".pq", ".csv")  # dropped from an events file's name to form the log's


def conform_behaviours(df: pd.DataFrame, *, source: str = "behaviours", time_unit: str = "s",
                       now: int | None = None) -> pd.DataFrame:
    """Check and coerce a DataFrame to the behaviour-log schema; returns a new frame.

    ``time_unit`` and ``now`` as for :func:`genctr.data.schema.conform_events`. Extra columns
    are dropped. Raises DataValidationError naming the first problem: a missing column, a null,
    an id that is not a whole int64, a time out of range, an empty or overlong or non-string
    event_type, a repeated (user_id, item_id, event_time, event_type).
    """
    missing = [c for c in BEHAVIOUR_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{source}: behaviour log lacks required column(s) {missing}; "
                                  f"expected {list(BEHAVIOUR_COLUMNS)}")
    out = pd.DataFrame(index=df.index)
    for name in ID_COLUMNS:
        out[name] = whole_numbers(df[name], name, source)
    out["event_time"] = to_epoch_seconds(df["event_time"], where=source, unit=time_unit, now=now)
    out["event_type"] = _event_types(df["event_type"], source)
    dup = out.duplicated(UNIQUE_KEY)
    if dup.any():
        first = out[dup].iloc[0]
        key = ", ".join(f"{c}={show(first[c])}" for c in UNIQUE_KEY)
        raise DataValidationError(
            f"{source}: behaviour log rows must be unique on {UNIQUE_KEY}; {key} repeats "
            f"({int(dup.sum())} repeated rows in all, e.g. {row_examples(out['event_type'], dup)}); "
            "drop the repeats or tell them apart by event_type")
    return out.reset_index(drop=True)


def _event_types(col: pd.Series, where: str) -> np.ndarray:
    """Object array of str; a null, a non-string, a blank or an overlong value names its rows."""
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise DataValidationError(f"{where}: column 'event_type' has {int(nulls.sum())} null(s), "
                                  f"e.g. {row_examples(col, nulls)}")
    if len(col) == 0:
        return np.empty(0, dtype=object)
    if not (isinstance(col.dtype, pd.StringDtype) or pd.api.types.infer_dtype(col, skipna=False) == "string"):
        bad = ~col.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)  # the failure path only
        raise DataValidationError(
            f"{where}: column 'event_type' must hold strings (e.g. 'cart'), found {show(col[bad].iloc[0])}: "
            f"{int(bad.sum())} of {len(col)} rows do not, e.g. {row_examples(col, bad)} (rows counted from 0)")
    text = col.astype(str)
    blank = (text.str.strip().str.len() == 0).to_numpy()
    long = (text.str.len() > MAX_EVENT_TYPE).to_numpy()
    for bad, what in ((blank, "must not be empty or only whitespace"),
                      (long, f"must be at most {MAX_EVENT_TYPE} characters")):
        if bad.any():
            raise DataValidationError(f"{where}: column 'event_type' {what}: {int(bad.sum())} of {len(col)} rows "
                                      f"are not, e.g. {row_examples(col, bad)} (rows counted from 0)")
    return text.to_numpy(dtype=object)


def empty_behaviours() -> pd.DataFrame:
    """A log without rows, typed as :data:`BEHAVIOUR_COLUMNS`."""
    return pd.DataFrame({c: pd.Series([], dtype="int64" if t == "int64" else object)
                         for c, t in BEHAVIOUR_COLUMNS.items()})


def arrow_schema() -> pa.Schema:
    """The log's Parquet schema (explicit: an empty object column would otherwise be typed null)."""
    import pyarrow as pa

    return pa.schema([(c, pa.string() if t == "string" else pa.int64()) for c, t in BEHAVIOUR_COLUMNS.items()])


def write_behaviours(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a conformed log as one Parquet file at ``out``: a unique temporary name beside it,
    then a rename (``genctr.atomic``), so a reader never sees half of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genctr.atomic import publish, temp_path

    out = Path(out)
    table = pa.Table.from_pandas(df[list(BEHAVIOUR_COLUMNS)], schema=arrow_schema(), preserve_index=False)
    tmp = temp_path(out)
    try:
        pq.write_table(table, tmp)
        publish(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return out


def behaviours_path(events: str | os.PathLike[str]) -> str:
    """Where the log of the events at ``events`` lives: ``<dir>/<stem>.behaviours.parquet``.

    ``stem`` is the events' name without a .parquet/.pq/.csv suffix; URIs keep their scheme.
    """
    text = os.fspath(events).rstrip("/")
    if "://" in text:
        head, name = posixpath.split(text)
        join = posixpath.join
    else:
        head, name = os.path.split(text)
        join = os.path.join
    for suffix in EVENT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return join(head, name + SUFFIX)
