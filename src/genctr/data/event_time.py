"""Event times: seconds since the Unix epoch, within a plausible range; unit detection.

Canonical events carry ``event_time`` as whole seconds (UTC). Logs often hold milliseconds,
microseconds or nanoseconds instead; such values pass every type check and only break much
later (a year 52672 timestamp, an int64 overflow). So every step that reads events checks
the range ``[MIN_EVENT_TIME, now + FUTURE_SLACK_S]`` and, when values fall outside it,
names the unit their magnitude suggests and the option that converts them
(``time_unit``: ``--time-unit`` on ``genctr data export`` and ``genctr features build``).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from genctr.data.values import row_examples, show
from genctr.errors import ConfigError, DataValidationError

MIN_EVENT_TIME = 631_152_000  # 1990-01-01T00:00:00Z: nothing in a click log is older
FUTURE_SLACK_S = 3_600  # clock skew tolerated beyond "now"
TIME_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}  # unit -> ticks per second
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def check_time_unit(unit: str) -> int:
    """Ticks per second of ``unit``; a ConfigError naming the choices otherwise."""
    if unit not in TIME_UNITS:
        raise ConfigError(f"time_unit must be one of {list(TIME_UNITS)}, got {str(unit)[:40]!r}")
    return TIME_UNITS[unit]


def time_bounds(now: int | None = None) -> tuple[int, int]:
    """Inclusive range of plausible epoch seconds: [1990-01-01, now + slack]."""
    return MIN_EVENT_TIME, int(time.time() if now is None else now) + FUTURE_SLACK_S


def detect_unit(value: float, now: int | None = None) -> str | None:
    """The unit in which ``value`` (a raw time) lands inside ``time_bounds``, or None.

    The ranges of the four units are disjoint (each is ~1.9e9 ticks wide and 1,000 times
    the one before), so the magnitude of one value decides.
    """
    lo, hi = time_bounds(now)
    for unit, ticks in TIME_UNITS.items():
        if lo * ticks <= value <= hi * ticks:
            return unit
    return None


def _date(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "out of any calendar"


def range_error(where: str, n_bad: int, n_rows: int, examples: str, extreme: float, unit: str,
                now: int | None = None) -> DataValidationError:
    """The error for event times outside ``time_bounds``; names the likely unit and the fix.

    ``extreme`` is the offending raw value farthest from the range (before conversion from
    ``unit``); ``examples`` a short list of offending rows as the caller identifies them.
    """
    lo, hi = time_bounds(now)
    head = (f"{where}: column 'event_time' must be {UNIT_NAMES[unit]} since the epoch between "
            f"{_date(lo)} and now + {FUTURE_SLACK_S} s; {n_bad} of {n_rows} rows are not, e.g. {examples}")
    guess = detect_unit(extreme, now)
    if guess is not None and guess != unit:
        return DataValidationError(
            f"{head}. They look like {UNIT_NAMES[guess]}: pass time_unit='{guess}' "
            f"(--time-unit {guess}) to convert them to seconds")
    seconds = extreme / TIME_UNITS[unit]
    when = "in the future" if seconds > hi else "before 1990"
    return DataValidationError(f"{head}. The farthest, {_date(seconds)} UTC, is {when}: fix the clock or the extract")


def to_epoch_seconds(col: pd.Series, *, where: str, unit: str = "s", now: int | None = None) -> pd.Series:
    """int64 epoch seconds from numbers in ``unit`` or datetimes / ISO-8601 strings (UTC).

    Numbers must be whole in their unit (sub-second parts of ms/us/ns are dropped by the
    conversion, rounding down). The result is range-checked; ``unit`` is ignored for datetimes.
    """
    ticks = check_time_unit(unit)
    if col.isna().any():
        raise DataValidationError(f"{where}: column 'event_time' has {int(col.isna().sum())} null(s)")
    if pd.api.types.is_bool_dtype(col):
        raise DataValidationError(f"{where}: column 'event_time' is boolean; expected epoch seconds")
    if pd.api.types.is_numeric_dtype(col):
        raw = col.to_numpy()
        if pd.api.types.is_float_dtype(col):
            bad = ~np.isfinite(raw) | (raw != np.floor(raw)) | (np.abs(raw) >= 2.0**63)
            if bad.any():
                raise DataValidationError(
                    f"{where}: column 'event_time' must hold whole {UNIT_NAMES[unit]} since the epoch: "
                    f"{int(bad.sum())} rows do not, e.g. {row_examples(col, bad)}")
        elif raw.dtype == np.uint64 and raw.max() > np.iinfo(np.int64).max:
            raise DataValidationError(f"{where}: column 'event_time' has values beyond int64, e.g. {show(raw.max())}")
        values = raw.astype("int64")
        seconds = values // ticks  # floor: sub-second ticks are dropped
    else:
        values = seconds = _parse_datetimes(col, where)
        ticks, unit = 1, "s"
    lo, hi = time_bounds(now)
    out = (seconds < lo) | (seconds > hi)
    if out.any():
        far = values[out][np.argmax(np.abs(values[out].astype("float64") - (lo + hi) / 2 * ticks))]
        raise range_error(where, int(out.sum()), len(col), row_examples(col, out), float(far), unit, now)
    return pd.Series(seconds, index=col.index, dtype="int64")


def _parse_datetimes(col: pd.Series, where: str) -> np.ndarray:
    try:
        parsed = pd.to_datetime(col, utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        coerced = pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
        bad = col[coerced.isna()]
        first = show(bad.iloc[0]) if len(bad) else "?"
        raise DataValidationError(
            f"{where}: column 'event_time' has an unparseable timestamp {first}: "
            "use epoch seconds or ISO-8601 strings") from exc
    if parsed.isna().any():
        raise DataValidationError(f"{where}: column 'event_time' has nulls")
    # whole seconds whatever the datetime unit (Parquet gives us or ns; astype(int64) would not say which)
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")
