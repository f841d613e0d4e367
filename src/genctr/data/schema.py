"""Canonical impression-log schema and validation of user-supplied events.

Every source adapter produces a pandas DataFrame with these columns (one row per
impression). Behaviours, which the sequences are made of, are the clicked impressions, plus
the rows of an optional behaviour log (``genctr.data.behaviours``).

    request_id   int64   unique impression id
    user_id      int64   raw user id
    item_id      int64   raw item (ad) id
    category_id  int64   raw category id of the item
    event_time   int64   seconds since the Unix epoch (UTC), in [1990-01-01, now + 1 h]
    clicked      int8    1 = click, 0 = no click
    price        float64 optional: bid / price of the item, finite, in [0, MAX_PRICE]
                         (0.0 when unknown)
    position     int32   optional: slot the item was shown in, >= 0 (0 when unknown)

Validation never rounds or truncates: an id of 369.5, a label of 0.7, a price of inf or a
time in milliseconds is an error naming the column and example rows, not a changed value.
Numeric times in another unit are converted only when asked (``time_unit``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from genctr.data.event_time import to_epoch_seconds
from genctr.data.values import row_examples, show
from genctr.errors import DataValidationError

REQUIRED = {
    "request_id": "int64",
    "user_id": "int64",
    "item_id": "int64",
    "category_id": "int64",
    "event_time": "int64",
    "clicked": "int8",
}
OPTIONAL = {"price": ("float64", 0.0), "position": ("int32", 0)}
EVENT_COLUMNS = list(REQUIRED) + list(OPTIONAL)
ID_COLUMNS = ("request_id", "user_id", "item_id", "category_id")
MAX_PRICE = 1e6  # a bid or item price above this is a unit or parsing bug, not a price
INT64 = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))
INT32_MAX = int(np.iinfo(np.int32).max)
EXACT_FLOAT = 2.0**53  # float64 holds every integer below this; above, distinct ids collide


def conform_events(df: pd.DataFrame, *, source: str = "events", time_unit: str = "s",
                    now: int | None = None) -> pd.DataFrame:
    """Check and coerce a DataFrame to the canonical schema; returns a new frame.

    ``time_unit`` (s | ms | us | ns) is the unit of a numeric ``event_time``; other units are
    converted to seconds. ``now`` (epoch seconds, default the clock) bounds future times.
    Raises DataValidationError naming the first problem: a missing column, a null, a value
    that is not a whole number where one is required, a label outside {0, 1}, a time out of
    range (with the unit its magnitude suggests), a bad price or position, a repeated id.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing required column(s) {missing}; expected {list(REQUIRED)}"
        )
    out = pd.DataFrame(index=df.index)
    for name in ID_COLUMNS:
        out[name] = whole_numbers(df[name], name, source)
    out["event_time"] = to_epoch_seconds(df["event_time"], where=source, unit=time_unit, now=now)
    out["clicked"] = _labels(df["clicked"], source)
    if "price" in df.columns:
        out["price"] = _prices(df["price"], source)
    else:
        out["price"] = np.zeros(len(df), dtype="float64")
    if "position" in df.columns:
        out["position"] = whole_numbers(df["position"], "position", source, lo=0, hi=INT32_MAX).astype("int32")
    else:
        out["position"] = np.zeros(len(df), dtype="int32")
    dup = out["request_id"].duplicated()
    if dup.any():
        raise DataValidationError(f"{source}: column 'request_id' must be unique, "
                                  f"{show(out['request_id'][dup].iloc[0])} repeats ({int(dup.sum())} repeats in all)")
    return out.reset_index(drop=True)


def whole_numbers(col: pd.Series, name: str, where: str, lo: int = INT64[0], hi: int = INT64[1]) -> np.ndarray:
    """int64 values of ``col`` if every one is a whole number in [lo, hi]; else an error naming rows."""
    nulls = col.isna()
    if nulls.any():
        raise DataValidationError(f"{where}: column '{name}' has {int(nulls.sum())} null(s), "
                                  f"e.g. {row_examples(col, nulls)}")
    if pd.api.types.is_bool_dtype(col):
        raise DataValidationError(f"{where}: column '{name}' is boolean; it must hold integers")
    num = col if pd.api.types.is_numeric_dtype(col) else pd.to_numeric(col, errors="coerce")
    if isinstance(num.dtype, pd.api.extensions.ExtensionDtype):  # nullable Int64 / Float64, no NA left
        num = num.astype(num.dtype.numpy_dtype)
    raw = num.to_numpy()
    if pd.api.types.is_integer_dtype(num) and raw.dtype != np.uint64:
        bad = (raw < lo) | (raw > hi)
    elif pd.api.types.is_integer_dtype(num):  # uint64: compare before any cast wraps
        bad = raw > np.uint64(max(hi, 0))
    else:
        f = raw.astype("float64")
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(f) | (f != np.floor(f)) | (f < lo) | (f > hi) | (np.abs(f) >= EXACT_FLOAT)
    if bad.any():
        bounds = "" if (lo, hi) == INT64 else f" in [{lo}, {hi}]"
        raise DataValidationError(
            f"{where}: column '{name}' must hold integers{bounds}, found {show(col[bad].iloc[0])}: "
            f"{int(bad.sum())} of {len(col)} rows do not, e.g. {row_examples(col, bad)} (rows counted from 0)")
    return raw.astype("int64")


def _labels(col: pd.Series, where: str) -> np.ndarray:
    """int8 0/1; anything else (0.7, 2, 'yes', NaN) names its rows."""
    num = pd.to_numeric(col, errors="coerce")
    bad = ~num.isin([0, 1]).to_numpy()
    if bad.any():
        raise DataValidationError(
            f"{where}: column 'clicked' must be 0 or 1, found {show(col[bad].iloc[0])}: "
            f"{int(bad.sum())} of {len(col)} rows, e.g. {row_examples(col, bad)} (rows counted from 0)")
    return num.to_numpy().astype("int8")


def _prices(col: pd.Series, where: str) -> np.ndarray:
    """float64 prices, finite and in [0, MAX_PRICE]."""
    num = pd.to_numeric(col, errors="coerce")
    if pd.api.types.is_bool_dtype(num):
        num = num.astype("float64")
    f = num.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(f) | (f < 0) | (f > MAX_PRICE)
    if bad.any():
        raise DataValidationError(
            f"{where}: column 'price' must be numeric, without nulls, finite and in [0, {MAX_PRICE:g}]: "
            f"{int(bad.sum())} of {len(col)} rows are not, e.g. {row_examples(col, bad)} (rows counted from 0)")
    return f
