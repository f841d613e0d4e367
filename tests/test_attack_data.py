"""Replays hostile inputs against events and the feature build.

Each test feeds the first step that sees events (the schema in ``genctr.data.schema``, the
``genctr data export`` command, the Great Expectations suites, the Spark build) values a
careless or hostile user sends: labels of 0.7, ids of 369.5, times in milliseconds or
nanoseconds or in the year 2100, NaN / inf / negative prices, outputs that already exist.
Every one must be refused with the project's own error naming the column (or the option),
and nothing may change silently: a value either passes unchanged or is an error.
Schema properties run many cases with hypothesis; the Spark checks use a handful of tiny
frames on the shared SparkSession.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genctr.cli import app
from genctr.data.event_time import FUTURE_SLACK_S, MIN_EVENT_TIME, TIME_UNITS, UNIT_NAMES
from genctr.data.schema import MAX_PRICE, conform_events
from genctr.errors import ConfigError, DataValidationError
from genctr.features.expectations import run_events_suite as gx_events
from genctr.features.expectations import run_samples_suite

NOW = 1_700_000_000  # a fixed "now" for the schema properties
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
N = 6


def events(n: int = N) -> pd.DataFrame:
    """Six valid canonical events (seconds, prices and positions)."""
    return pd.DataFrame({
        "request_id": np.arange(n, dtype="int64"), "user_id": np.array([1, 1, 2, 2, 3, 3][:n], "int64"),
        "item_id": np.arange(n, dtype="int64") + 10, "category_id": np.full(n, 5, "int64"),
        "event_time": np.arange(n, dtype="int64") + 1_600_000_000, "clicked": np.array([0, 1] * (n // 2), "int8"),
        "price": np.linspace(0.5, 3.0, n), "position": np.arange(n, dtype="int32"),
    })


def with_value(column: str, value: object, row: int = 1) -> pd.DataFrame:
    """``events()`` with one cell replaced (the column becomes object dtype if it must)."""
    df = events()
    col = df[column].astype(object)
    col.iloc[row] = value
    try:
        df[column] = pd.Series(list(col)).infer_objects()
    except (TypeError, ValueError, OverflowError):
        df[column] = col
    return df


def refused(df: pd.DataFrame, *needles: str, **kw: object) -> str:
    with pytest.raises(DataValidationError) as err:
        conform_events(df, now=NOW, **kw)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


# --- schema: ids and labels are never rounded -------------------------------------------

hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12), st.booleans(), st.none())


@PROPS
@given(column=st.sampled_from(["request_id", "user_id", "item_id", "category_id"]), value=hostile_numbers)
def test_ids_pass_unchanged_or_are_refused_by_name(column: str, value: object) -> None:
    df = with_value(column, value)
    try:
        out = conform_events(df, now=NOW)
    except DataValidationError as err:
        assert f"'{column}'" in str(err)
        return
    # accepted: exactly the integer the user wrote (369.5 never becomes 369)
    assert float(out[column].iloc[1]) == float(value) and out[column].dtype == np.int64  # type: ignore[arg-type]  # value: object; accepted, so a number


@PROPS
@given(value=hostile_numbers)
def test_labels_pass_unchanged_or_are_refused_by_name(value: object) -> None:
    try:
        out = conform_events(with_value("clicked", value), now=NOW)
    except DataValidationError as err:
        assert "'clicked' must be 0 or 1" in str(err) and "row 1" in str(err)
        return
    assert out["clicked"].iloc[1] == float(value) and out["clicked"].iloc[1] in (0, 1)  # type: ignore[arg-type]  # value: object; accepted, so a number


def test_fractional_id_and_label_name_the_rows() -> None:
    bad = events().assign(item_id=[10, 369.5, 12, 13, 14, 369.25], clicked=[0, 1, 0, 1, 0, 1])
    refused(bad, "'item_id' must hold integers", "found 369.5", "2 of 6 rows", "row 1: 369.5", "row 5: 369.25")
    refused(events().assign(clicked=[0, 0.7, 1, 0, 1, 0]), "'clicked' must be 0 or 1, found 0.7", "row 1")
    refused(with_value("item_id", 2.0**60), "'item_id'")  # beyond 2**53 distinct ids collide as floats
    refused(with_value("user_id", np.uint64(2**64 - 1)), "'user_id'")


def test_an_echoed_value_is_cut_short() -> None:
    msg = refused(with_value("item_id", "x" * 100_000), "'item_id' must hold integers")
    assert len(msg) < 300


# --- schema: time units, the future, the distant past ---------------------------------

seconds = st.integers(min_value=MIN_EVENT_TIME, max_value=NOW)


@PROPS
@given(t=seconds, unit=st.sampled_from(["ms", "us", "ns"]), sub=st.integers(min_value=0, max_value=999))
def test_other_units_are_detected_and_converted_only_on_request(t: int, unit: str, sub: int) -> None:
    ticks = TIME_UNITS[unit]
    raw = (np.arange(N, dtype="int64") + t) * ticks + sub * (ticks // 1000)
    df = events().assign(event_time=raw)
    refused(df, UNIT_NAMES[unit], f"--time-unit {unit}", "'event_time'")
    out = conform_events(df, time_unit=unit, now=NOW + N)
    assert out["event_time"].tolist() == list(range(t, t + N))  # whole seconds, rounded down


@PROPS
@given(ahead=st.integers(min_value=FUTURE_SLACK_S + 1, max_value=10**9))
def test_future_times_are_refused(ahead: int) -> None:
    refused(with_value("event_time", NOW + ahead), "'event_time'", "in the future", "row 1")
    conform_events(with_value("event_time", NOW + FUTURE_SLACK_S), now=NOW)  # the tolerance itself passes


@PROPS
@given(t=st.integers(min_value=-(2**40), max_value=MIN_EVENT_TIME - 1))
def test_times_before_1990_are_refused(t: int) -> None:
    refused(with_value("event_time", t), "'event_time'", "1990-01-01")


def test_time_units_of_floats_datetimes_and_bad_options() -> None:
    refused(with_value("event_time", 1_600_000_000.5), "whole seconds")
    refused(with_value("event_time", float("inf")), "'event_time'")
    # Parquet timestamps arrive as datetime64[us]: read as whole seconds, not 1970
    us = pd.Series(pd.date_range("2021-01-01", periods=N, freq="h")).dt.as_unit("us")
    assert conform_events(events().assign(event_time=us), now=NOW)["event_time"].iloc[0] == 1_609_459_200
    refused(events().assign(event_time=pd.Series(pd.date_range("2100-01-01", periods=N, freq="h"))), "in the future")
    with pytest.raises(ConfigError, match="time_unit"):
        conform_events(events(), time_unit="minutes", now=NOW)


# --- schema: prices and positions ------------------------------------------------------

@PROPS
@given(price=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=5)))
def test_prices_are_finite_bounded_or_refused(price: object) -> None:
    try:
        out = conform_events(with_value("price", price), now=NOW)
    except DataValidationError as err:
        assert "'price' must be" in str(err) and "row 1" in str(err)
        return
    assert 0.0 <= out["price"].iloc[1] <= MAX_PRICE and out["price"].iloc[1] == float(price)  # type: ignore[arg-type]  # price: object; accepted, so a number


@pytest.mark.parametrize("value", [2.5, -1, 2**40, float("nan"), "left"])
def test_bad_positions_are_refused(value: object) -> None:
    refused(with_value("position", value), "column 'position'", "row 1")


# --- export and its command line -------------------------------------------------------

def cli(*args: str) -> object:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_export_refuses_milliseconds_and_converts_on_request(tmp_path: Path) -> None:
    src = tmp_path / "ms.csv"
    events().assign(event_time=events()["event_time"] * 1000).to_csv(src, index=False)
    out = tmp_path / "ev.parquet"
    bad = cli("data", "export", "--source", "events", "--path", str(src), "--out", str(out))
    assert bad.exit_code == 2 and "milliseconds" in bad.stderr and "--time-unit ms" in bad.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ms.csv"]
    ok = cli("data", "export", "--source", "events", "--path", str(src), "--out", str(out), "--time-unit", "ms")
    assert ok.exit_code == 0, ok.output
    assert pd.read_parquet(out)["event_time"].tolist() == events()["event_time"].tolist()
    wrong = cli("data", "export", "--source", "events", "--path", str(src), "--out", str(out), "--time-unit", "hours")
    assert wrong.exit_code == 2 and "time_unit must be one of" in wrong.stderr
    movielens = cli("data", "export", "--time-unit", "ms", "--out", str(tmp_path / "ml"))
    assert movielens.exit_code == 2 and "seconds by definition" in movielens.stderr


def test_export_onto_an_existing_output(tmp_path: Path) -> None:
    src = tmp_path / "ev.csv"
    events().to_csv(src, index=False)
    base = ["data", "export", "--source", "events", "--path", str(src), "--out"]
    file_out, dir_out = tmp_path / "old.parquet", tmp_path / "old_dir"
    file_out.write_text("keep me")
    (dir_out / "part").mkdir(parents=True)
    for existing in (file_out, dir_out):
        res = cli(*base, str(existing))
        assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert file_out.read_text() == "keep me" and (dir_out / "part").is_dir()  # untouched
    for existing in (file_out, dir_out):  # replaced atomically, a directory by a file too
        assert cli(*base, str(existing), "--overwrite").exit_code == 0
        assert len(pd.read_parquet(existing)) == N
    synthetic = cli("data", "export", "--source", "synthetic", "--events", "300", "--users", "30", "--items", "60",
                    "--out", str(file_out), "--overwrite")  # a directory replaces the file (rmtree crashed here)
    assert synthetic.exit_code == 0, synthetic.output
    assert file_out.is_dir() and len(pd.read_parquet(file_out)) == 300
    parent_is_file = cli(*base, str(src / "under_a_file.parquet"))
    assert parent_is_file.exit_code == 2 and "cannot create" in parent_is_file.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


# --- Great Expectations suites -----------------------------------------------------------

def gx_frame(n: int = 200) -> pd.DataFrame:
    """Canonical events large enough for the events suite's row count."""
    from build_fixtures import tiny_events

    return tiny_events().head(n).astype({"request_id": "int64", "clicked": "int8"}) \
        .assign(position=np.zeros(n, "int32"))


@pytest.mark.parametrize("column, value, name", [
    ("price", float("nan"), "price_not_null"), ("price", float("inf"), "price_in_range"),
    ("price", -0.01, "price_in_range"), ("price", MAX_PRICE * 10, "price_in_range"),
    ("position", -1, "position_in_range"),
])
def test_events_suite_bounds_price_and_position(tmp_path: Path, column: str, value: float, name: str) -> None:
    df = gx_frame()
    df.loc[7, column] = value
    with pytest.raises(DataValidationError) as err:
        gx_events(df, None, tmp_path, raise_on_failure=True)
    assert name in str(err.value) and name in Path(err.value.report_path or "").read_text()


@pytest.mark.parametrize("value", [float("inf"), -1.0, float("nan")])
def test_samples_suite_bounds_price(tmp_path: Path, value: float) -> None:
    from test_expectations import samples_from_events, write_build

    samples = samples_from_events(gx_frame())
    samples.loc[3, "price"] = value
    with pytest.raises(DataValidationError) as err:
        run_samples_suite(write_build(tmp_path / "b", samples), None, tmp_path / "r", raise_on_failure=True)
    assert ("price_not_null" if math.isnan(value) else "price_in_range") in str(err.value)


# --- the Spark build: checks before any cast ---------------------------------------------

T = 1_600_000_000


def spark_events() -> pd.DataFrame:
    """13 events of 4 users (seconds), for the Spark checks."""
    n = 13
    return pd.DataFrame({
        "request_id": np.arange(1, n + 1, dtype="int64"), "user_id": np.array([10] * 6 + [20] * 4 + [30] * 2 + [40]),
        "item_id": np.array([100, 101, 102, 100, 103, 104, 101, 102, 100, 999, 100, 101, 104], "int64"),
        "category_id": np.full(n, 7, "int64"), "event_time": T + np.arange(n, dtype="int64") * 60,
        "clicked": np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1], "int8"), "price": np.ones(n),
    })


def _set(df: pd.DataFrame, column: str, value: object, dtype: str | None = None) -> pd.DataFrame:
    df = df.copy()
    df[column] = df[column].astype(dtype or object)
    df.loc[4, column] = value  # request_id 5
    return df


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Parquet that keeps NaN as NaN (pandas' writer turns it into null, Spark's does not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {c: pa.array(df[c].to_numpy(), from_pandas=False) if df[c].dtype.kind in "fiu" else pa.array(list(df[c]))
              for c in df.columns}
    pq.write_table(pa.table(arrays), path)


SPARK_ATTACKS = [  # (name, frame, time_unit, words the error must contain)
    ("fractional item id", lambda d: _set(d, "item_id", 369.5, "float64"), "s", ["'item_id'", "request_id=5: 369.5"]),
    ("NaN item id", lambda d: _set(d, "item_id", float("nan"), "float64"), "s", ["'item_id'", "request_id=5"]),
    ("huge double id", lambda d: _set(d, "user_id", 2.0**62, "float64"), "s", ["'user_id'"]),
    ("fractional string id", lambda d: _set(d, "category_id", "7.5", "str"), "s", ["'category_id'", "7.5"]),
    ("label 0.7", lambda d: _set(d, "clicked", 0.7, "float64"), "s", ["'clicked' must be 0 or 1", "request_id=5: 0.7"]),
    ("label 2", lambda d: _set(d, "clicked", 2, "int64"), "s", ["'clicked' must be 0 or 1"]),
    ("milliseconds", lambda d: d.assign(event_time=d["event_time"] * 1000), "s", ["milliseconds", "--time-unit ms"]),
    ("nanoseconds", lambda d: d.assign(event_time=d["event_time"] * 10**9), "s", ["nanoseconds", "--time-unit ns"]),
    ("seconds read as ms", lambda d: d, "ms", ["look like seconds", "--time-unit s"]),
    ("year 2100", lambda d: _set(d, "event_time", 4_102_444_800, "int64"), "s", ["in the future", "request_id=5"]),
    ("1970", lambda d: _set(d, "event_time", 5, "int64"), "s", ["before 1990", "request_id=5: 5"]),
    ("fractional seconds", lambda d: _set(d, "event_time", T + 0.5, "float64"), "s", ["whole seconds"]),
    ("NaN price", lambda d: _set(d, "price", float("nan"), "float64"), "s", ["'price'", "request_id=5: NaN"]),
    ("inf price", lambda d: _set(d, "price", float("inf"), "float64"), "s", ["'price'", "Infinity"]),
    ("negative price", lambda d: _set(d, "price", -3.0, "float64"), "s", ["'price'", "-3.0"]),
    ("huge price", lambda d: _set(d, "price", 1e300, "float64"), "s", ["'price'"]),
    ("struct id", lambda d: d.assign(item_id=[{"a": 1}] * len(d)), "s", ["'item_id' has type struct"]),
]


@pytest.mark.slow
def test_spark_read_refuses_hostile_events_before_any_cast(spark, tmp_path: Path) -> None:
    from genctr.features.spark_events import read_events

    for i, (name, mutate, unit, needles) in enumerate(SPARK_ATTACKS):
        path = tmp_path / f"attack{i}.parquet"
        write_parquet(mutate(spark_events()), path)
        with pytest.raises(DataValidationError) as err:
            read_events(spark, path, time_unit=unit)
        for needle in needles:
            assert needle in str(err.value), f"{name}: {err.value}"
    # explicit units convert exactly (ns values exceed 2**53: no float rounding)
    for unit, ticks in (("ms", 10**3), ("ns", 10**9)):
        path = tmp_path / f"{unit}.parquet"
        ev = spark_events()
        ev.assign(event_time=ev["event_time"] * ticks + ticks - 1).to_parquet(path, index=False)
        got = read_events(spark, path, time_unit=unit).orderBy("request_id").toPandas()
        assert got["event_time"].tolist() == ev["event_time"].tolist(), unit
        assert got["item_id"].tolist() == ev["item_id"].tolist()


@pytest.mark.slow
def test_features_build_command_refuses_units_and_prints_rows(spark, tmp_path: Path) -> None:
    ev = spark_events()
    ns, ms = tmp_path / "ns.parquet", tmp_path / "ms.parquet"
    ev.assign(event_time=ev["event_time"] * 10**9).to_parquet(ns, index=False)
    ev.assign(event_time=ev["event_time"] * 1000).to_parquet(ms, index=False)
    out = tmp_path / "build"
    bad = cli("features", "build", "--events", str(ns), "--out", str(out), "--max-seq-len", "2")
    assert bad.exit_code == 2 and "nanoseconds" in bad.stderr and "--time-unit ns" in bad.stderr
    assert not out.exists()  # nothing written
    ok = cli("features", "build", "--events", str(ms), "--out", str(out), "--max-seq-len", "2", "--time-unit", "ms")
    assert ok.exit_code == 0, ok.output
    printed = json.loads(ok.stdout.strip().splitlines()[-1])
    assert printed["rows"] == 13 and sum(printed["rows_per_split"].values()) == 13
    assert printed["users"] == 4
    samples = pd.concat(pd.read_parquet(out / "samples" / s) for s in ("train", "valid", "test"))
    assert sorted(samples["event_time"]) == ev["event_time"].tolist()  # converted to seconds
    assert abs(time.time() - samples["event_time"].max()) < 10 * 365 * 86_400
