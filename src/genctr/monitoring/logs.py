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
    randomisation string   "user" (user-sticky split: the user is the unit) | "request"
                           (request-randomised, e.g. KServe canaryTrafficPercent: the request is)

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
    randomisation string   as in requests

clicks
    request_id    string
    item_id       int64
    ts            int64

A click is credited to the impression with the same (request_id, item_id) key, nothing else.
A key shown twice, or clicked twice, is a logging fault: by default (``duplicates="refuse"``) it
is a DataValidationError, with ``duplicates="dedupe"`` the first row per key is kept (the
earliest click) and the dropped rows are counted. A click whose key was never shown (an
*orphan*, e.g. from a page cached before the rollout) is counted and never credited.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from genctr.atomic import atomic_path
from genctr.errors import ConfigError, DataValidationError, describe

ARMS = ("champion", "canary")
RANDOMISATION_UNITS = ("user", "request")  # how traffic was split; the analysis unit must match
KEY = ["request_id", "item_id"]  # what joins a click to the impression it is credited to
DUPLICATE_POLICIES = ("refuse", "dedupe")
log = logging.getLogger(__name__)

REQUEST_SCHEMA = {"request_id": "string", "ts": "int64", "user_id": "int64", "arm": "string",
                  "status": "int32", "latency_ms": "float64", "n_candidates": "int32",
                  "randomisation": "string"}
IMPRESSION_SCHEMA = {"request_id": "string", "ts": "int64", "user_id": "int64", "arm": "string",
                     "item_id": "int64", "category_id": "int64", "position": "int32", "bid": "float64",
                     "pctr": "float64", "cpc": "float64", "randomisation": "string"}
CLICK_SCHEMA = {"request_id": "string", "item_id": "int64", "ts": "int64"}
SCHEMAS = {"requests": REQUEST_SCHEMA, "impressions": IMPRESSION_SCHEMA, "clicks": CLICK_SCHEMA}


@dataclass
class LogQuality:
    """Rows of the raw logs that were not taken at face value (all 0 on clean logs)."""

    orphan_clicks: int = 0  # click keys that match no impression: never credited
    duplicate_impressions: int = 0  # extra rows of an already-seen impression key (dedupe only)
    duplicate_clicks: int = 0  # extra clicks on an already-clicked key (dedupe only)


@dataclass
class ABLogs:
    requests: pd.DataFrame
    impressions: pd.DataFrame  # one row per key, with ``clicked`` (int8) and ``revenue`` (cpc if clicked)
    clicks: pd.DataFrame  # the credited clicks only: one per impression key, its earliest
    quality: LogQuality = field(default_factory=LogQuality)


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
            raise DataValidationError(f"{table} log column {col!r} is not {dtype}: "
                                      f"{describe(str(exc), 200, raw=True)}") from exc
        if out[col].isna().any():
            raise DataValidationError(f"{table} log column {col!r} has nulls")
    if "arm" in schema:
        bad = sorted(set(out["arm"].unique()) - set(ARMS))
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataValidationError(f"{table} log has unknown arm(s) {describe(bad[:5])}{more}; "
                                      f"expected {list(ARMS)}")
    if "randomisation" in schema:
        bad = sorted(set(out["randomisation"].unique()) - set(RANDOMISATION_UNITS))
        if bad:
            raise DataValidationError(f"{table} log has unknown randomisation unit(s) {describe(bad[:5])}; "
                                      f"expected {list(RANDOMISATION_UNITS)}")
    for col in ("bid", "pctr", "cpc", "latency_ms"):
        if col in schema and not np.isfinite(out[col].to_numpy()).all():
            raise DataValidationError(f"{table} log column {col!r} has NaN or infinite values")
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
    with atomic_path(d / name) as tmp:
        df.to_parquet(tmp, index=False)
    return d / name


def read_table(log_dir: str | Path, table: str) -> pd.DataFrame:
    """Every part file of ``log_dir/table``, checked; an unreadable part is named in the error."""
    d = Path(log_dir) / table
    parts = sorted(p for p in d.glob("part-*.parquet")) if d.is_dir() else []
    if not parts:
        return conform(pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMAS[table].items()}), table)
    frames = []
    for p in parts:  # one read and one vectorised check per part file
        try:
            df = pd.read_parquet(p)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataValidationError(f"{table} log part {p} is not a readable Parquet file "
                                      f"({describe(str(exc), 200, raw=True)}): move it out of {d} or rewrite it"
                                      ) from exc
        try:
            frames.append(conform(df, table))
        except DataValidationError as exc:
            raise DataValidationError(f"{p}: {exc}") from exc
    return pd.concat(frames, ignore_index=True)


def _sample_keys(df: pd.DataFrame, mask: pd.Series) -> str:
    return describe([tuple(k) for k in df.loc[mask, KEY].head(3).itertuples(index=False)])


def join_clicks(impressions: pd.DataFrame, clicks: pd.DataFrame,
                duplicates: str = "refuse") -> tuple[pd.DataFrame, pd.DataFrame, LogQuality]:
    """Credit clicks to impressions by key: ``(impressions + clicked/revenue, credited clicks, quality)``.

    ``impressions``: (I, ...) rows, ``clicks``: (C, 3) rows. Duplicated keys follow ``duplicates``
    (module docstring); the result has one impression row per key and one click per clicked key.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {describe(duplicates)}")
    dup_imp = impressions.duplicated(KEY, keep="first")
    clicks = clicks.sort_values("ts", kind="stable")  # keep="first" below keeps each key's earliest click
    dup_clk = clicks.duplicated(KEY, keep="first")
    n_dup_imp, n_dup_clk = int(dup_imp.sum()), int(dup_clk.sum())
    if duplicates == "refuse" and n_dup_imp:
        raise DataValidationError(f"impressions log has {n_dup_imp} duplicate (request_id, item_id) row(s), e.g. "
                                  f"{_sample_keys(impressions, dup_imp)}: fix the ad server's logging, or set "
                                  "the policy's duplicates=dedupe to keep the first row of each")
    if duplicates == "refuse" and n_dup_clk:
        raise DataValidationError(f"clicks log has {n_dup_clk} duplicate (request_id, item_id) click(s), e.g. "
                                  f"{_sample_keys(clicks, dup_clk)}: fix the click stream, or set the "
                                  "policy's duplicates=dedupe to count each key's first click only")
    impressions = impressions[~dup_imp.to_numpy()].reset_index(drop=True)
    clicks = clicks[~dup_clk.to_numpy()]
    shown = clicks.merge(impressions[KEY], on=KEY, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    credited = clicks[shown].sort_index().reset_index(drop=True)  # back in log order
    out = impressions.merge(credited[KEY].assign(clicked=np.int8(1)), on=KEY, how="left")  # keeps row order
    out["clicked"] = out["clicked"].fillna(0).astype("int8")
    out["revenue"] = out["cpc"] * out["clicked"]
    quality = LogQuality(int((~shown).sum()), n_dup_imp, n_dup_clk)
    if quality.orphan_clicks:
        log.warning("%d click(s) match no impression (request_id, item_id): counted, not credited",
                    quality.orphan_clicks)
    if n_dup_imp or n_dup_clk:
        log.warning("dropped %d duplicate impression(s) and %d duplicate click(s)", n_dup_imp, n_dup_clk)
    return out, credited, quality


def read_logs(log_dir: str | Path, duplicates: str = "refuse") -> ABLogs:
    """All three tables of ``log_dir``, checked, with clicks credited to impressions by key."""
    requests = read_table(log_dir, "requests")
    impressions, clicks, quality = join_clicks(read_table(log_dir, "impressions"), read_table(log_dir, "clicks"),
                                               duplicates)
    return ABLogs(requests, impressions, clicks, quality)
