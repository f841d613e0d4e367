"""Canonical impression-log schema and validation of user-supplied events.

Every source adapter produces a pandas DataFrame with these columns (one row per
impression). Behaviours, which the sequences are made of, are the clicked impressions.

    request_id   int64   unique impression id
    user_id      int64   raw user id
    item_id      int64   raw item (ad) id
    category_id  int64   raw category id of the item
    event_time   int64   seconds since the Unix epoch (UTC)
    clicked      int8    1 = click, 0 = no click
    price        float64 optional: bid / price of the item (0.0 when unknown)
    position     int32   optional: slot the item was shown in (0 when unknown)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

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


def _to_epoch_seconds(col: pd.Series) -> pd.Series:
    """Integers pass through; datetimes and ISO strings are parsed (UTC)."""
    if pd.api.types.is_integer_dtype(col):
        return col.astype("int64")
    if pd.api.types.is_float_dtype(col):
        if not np.all(np.isfinite(col.to_numpy())):
            raise DataValidationError("column 'event_time' has nulls or non-finite values")
        if not np.all(col.to_numpy() == np.floor(col.to_numpy())):
            raise DataValidationError("column 'event_time' must be whole seconds since the epoch")
        return col.astype("int64")
    try:
        parsed = pd.to_datetime(col, utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError) as exc:
        bad = _first_unparseable(col)
        raise DataValidationError(
            f"column 'event_time' has an unparseable timestamp {_show(bad)}: "
            "use epoch seconds or ISO-8601 strings"
        ) from exc
    if parsed.isna().any():
        raise DataValidationError("column 'event_time' has nulls")
    return (parsed.astype("int64") // 10**9).astype("int64")


def _show(value: object) -> str:
    """repr of a value as the user wrote it (numpy scalars shown as plain Python values)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first_unparseable(col: pd.Series) -> object:
    coerced = pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
    bad = col[coerced.isna()]
    return bad.iloc[0] if len(bad) else None


def validate_events(df: pd.DataFrame, *, source: str = "events") -> pd.DataFrame:
    """Check and coerce a DataFrame to the canonical schema; returns a new frame.

    Raises DataValidationError naming the first problem: a missing column, a null id,
    a value of the wrong type, an unparseable timestamp, or a label outside {0, 1}.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing required column(s) {missing}; expected {list(REQUIRED)}"
        )
    out = pd.DataFrame(index=df.index)
    for name in ID_COLUMNS:
        col = df[name]
        if col.isna().any():
            raise DataValidationError(f"{source}: column '{name}' has {int(col.isna().sum())} null(s)")
        if not pd.api.types.is_integer_dtype(col):
            coerced = pd.to_numeric(col, errors="coerce")
            if coerced.isna().any() or not np.all(coerced == np.floor(coerced)):
                bad = col[coerced.isna() | (coerced != np.floor(coerced))].iloc[0]
                raise DataValidationError(
                    f"{source}: column '{name}' must hold integers, found {_show(bad)}"
                )
            col = coerced
        out[name] = col.astype("int64")
    if df["event_time"].isna().any():
        raise DataValidationError(f"{source}: column 'event_time' has nulls")
    out["event_time"] = _to_epoch_seconds(df["event_time"])
    label = pd.to_numeric(df["clicked"], errors="coerce")
    bad_label = ~label.isin([0, 1])
    if bad_label.any():
        raise DataValidationError(
            f"{source}: column 'clicked' must be 0 or 1, found {_show(df['clicked'][bad_label].iloc[0])}"
        )
    out["clicked"] = label.astype("int8")
    for name, (dtype, default) in OPTIONAL.items():
        if name in df.columns:
            col = pd.to_numeric(df[name], errors="coerce")
            if col.isna().any():
                raise DataValidationError(f"{source}: column '{name}' must be numeric, without nulls")
            out[name] = col.astype(dtype)
        else:
            out[name] = np.full(len(df), default, dtype=dtype)
    if out["request_id"].duplicated().any():
        dup = out["request_id"][out["request_id"].duplicated()].iloc[0]
        raise DataValidationError(f"{source}: column 'request_id' must be unique, {dup} repeats")
    return out.reset_index(drop=True)
