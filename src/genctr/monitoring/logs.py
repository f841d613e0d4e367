"""The A/B log schema: what the canary analysis reads, whoever wrote it.

Three tables, each a Parquet directory of part files (appended to, never rewritten)::

    <log_dir>/requests/part-*.parquet     one row per ad request (one auction)
    <log_dir>/impressions/part-*.parquet  one row per ad shown
    <log_dir>/clicks/part-*.parquet       one row per click

Locally the traffic simulator (:mod:`genctr.simulation`) writes all three. On a cluster,
``requests`` and the ``pctr`` of ``impressions`` come from KServe payload logging (the
InferenceService's logger posts request/response CloudEvents; the arm is the revision that
answered), the ad server logs what it showed and charged (``impressions``), and ``clicks`` is the
click stream. The analysis only ever sees these tables, so both sources are treated alike.

requests
    request_id    string   unique per ad request
    ts            int64    epoch seconds
    user_id       int64    raw user id (the unit of randomisation)
    arm           string   "champion" | "canary"
    status        int32    HTTP status of the scoring call (200 = ok)
    latency_ms    float64  scoring call, client side
    n_candidates  int32    candidates sent for scoring

impressions
    request_id    string   joins requests
    ts            int64
    user_id       int64
    arm           string
    item_id       int64
    category_id   int64
    position      int32    0-based slot
    bid           float64  advertiser's bid per click
    pctr          float64  the arm's predicted CTR
    cpc           float64  generalised second price charged per click (<= bid)

clicks
    request_id    string
    item_id       int64
    ts            int64
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genctr.errors import DataValidationError

ARMS = ("champion", "canary")

REQUEST_SCHEMA = {"request_id": "string", "ts": "int64", "user_id": "int64", "arm": "string",
                  "status": "int32", "latency_ms": "float64", "n_candidates": "int32"}
IMPRESSION_SCHEMA = {"request_id": "string", "ts": "int64", "user_id": "int64", "arm": "string",
                     "item_id": "int64", "category_id": "int64", "position": "int32", "bid": "float64",
                     "pctr": "float64", "cpc": "float64"}
CLICK_SCHEMA = {"request_id": "string", "item_id": "int64", "ts": "int64"}
SCHEMAS = {"requests": REQUEST_SCHEMA, "impressions": IMPRESSION_SCHEMA, "clicks": CLICK_SCHEMA}


@dataclass
class ABLogs:
    requests: pd.DataFrame
    impressions: pd.DataFrame  # with ``clicked`` (int8) and ``revenue`` (cpc if clicked) joined in
    clicks: pd.DataFrame


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Check a table against its schema and cast it; the error names the table and column."""
    schema = SCHEMAS[table]
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise DataValidationError(f"{table} log lacks column(s) {missing}; expected {list(schema)}")
    out = pd.DataFrame(index=df.index)
    for col, dtype in schema.items():
        try:
            out[col] = df[col].astype(dtype)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{table} log column {col!r} is not {dtype}: {exc}") from exc
        if out[col].isna().any():
            raise DataValidationError(f"{table} log column {col!r} has nulls")
    if "arm" in schema:
        bad = sorted(set(out["arm"].unique()) - set(ARMS))
        if bad:
            raise DataValidationError(f"{table} log has unknown arm(s) {bad}; expected {list(ARMS)}")
    for col in ("bid", "pctr", "cpc", "latency_ms"):
        if col in schema and (out[col].to_numpy() < 0).any():
            raise DataValidationError(f"{table} log column {col!r} has negative values")
    if table == "impressions" and (out["cpc"].to_numpy() > out["bid"].to_numpy() + 1e-9).any():
        raise DataValidationError("impressions log has cpc above bid: a second-price charge never exceeds the bid")
    return out.reset_index(drop=True)


def append(log_dir: str | Path, table: str, df: pd.DataFrame) -> Path:
    """Append one part file to ``log_dir/table`` atomically (temp name, then rename)."""
    df = conform(df, table)
    d = Path(log_dir) / table
    d.mkdir(parents=True, exist_ok=True)
    name = f"part-{pd.Timestamp.now(tz='UTC').strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = d / f".{name}.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, d / name)
    return d / name


def read_table(log_dir: str | Path, table: str) -> pd.DataFrame:
    d = Path(log_dir) / table
    parts = sorted(p for p in d.glob("part-*.parquet")) if d.is_dir() else []
    if not parts:
        return conform(pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMAS[table].items()}), table)
    return conform(pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True), table)


def join_clicks(impressions: pd.DataFrame, clicks: pd.DataFrame) -> pd.DataFrame:
    """Impressions with ``clicked`` and ``revenue``; a click counts once per (request, item)."""
    key = clicks[["request_id", "item_id"]].drop_duplicates()
    key = key.assign(clicked=np.int8(1))
    out = impressions.merge(key, on=["request_id", "item_id"], how="left")
    out["clicked"] = out["clicked"].fillna(0).astype("int8")
    out["revenue"] = out["cpc"] * out["clicked"]
    orphans = len(key) - int(out["clicked"].sum())
    if orphans > 0:
        raise DataValidationError(f"{orphans} click(s) match no impression (request_id, item_id): "
                                  "the click stream and the impression log disagree")
    return out


def read_logs(log_dir: str | Path) -> ABLogs:
    """All three tables of ``log_dir``, checked, with clicks joined onto impressions."""
    requests = read_table(log_dir, "requests")
    impressions = read_table(log_dir, "impressions")
    clicks = read_table(log_dir, "clicks")
    return ABLogs(requests, join_clicks(impressions, clicks), clicks)
