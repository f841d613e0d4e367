"""The collect step of a canary turn: the A/B logs of the canary's window, checked.

:func:`collect` reads a log directory (local path or fsspec URI) into memory; the canary
pipeline's collect step writes the window with :func:`collect_to` and its analyse step reads it
back with :func:`read_collected`, which keeps the raw logs' quality counts (orphan and duplicate
rows) that a clean copy no longer shows.

A log directory written by the A/B log sink holds ``raw_clicks/`` (the click tracker's, not yet
attributed) instead of ``clicks/``: then the attribution join (:mod:`genctr.monitoring.attribution`,
PySpark) credits them to the impressions first, within ``attribution_window_s``; duplicate clicks
count once whatever the ``duplicates`` policy (a double click is not a logging fault), late and
early clicks are counted (``attribution.json`` beside the collected tables) and never credited.
Logs with ``clicks/`` only (the simulator's) take the pandas join of :mod:`genctr.monitoring.logs`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from genctr.atomic import atomic_path, write_json
from genctr.errors import ConfigError
from genctr.monitoring.analysis import arm_metrics
from genctr.monitoring.attribution import COUNTS_FILE, DEFAULT_WINDOW_S, AttributionConfig, AttributionCounts
from genctr.monitoring.clicks import RAW_CLICKS
from genctr.monitoring.logs import SCHEMAS, ABLogs, LogQuality, append, join_clicks, read_logs, read_table
from genctr.monitoring.units import pre_period_totals

log = logging.getLogger(__name__)

PRE_PERIOD_FILE = "pre_period.parquet"  # beside them, for CUPED: per-user totals before the window
QUALITY_FILE = "quality.json"  # beside the collected tables: the raw logs' LogQuality counts


def ab_log_dir(log_dir: str, deployment: str) -> str:
    """``log_dir``, or the default ``$GENCTR_HOME/ab-logs/<deployment>`` when it is ''."""
    from genctr.paths import home

    return log_dir or str(home() / "ab-logs" / deployment)


@contextmanager
def _local_logs(log_dir: str) -> Iterator[str]:
    """A local directory with the log tables: ``log_dir`` itself, or a temporary copy of an fsspec URI."""
    if "://" not in log_dir:
        if not Path(log_dir).is_dir():
            raise ConfigError(f"A/B log directory {log_dir} does not exist")
        yield log_dir
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(log_dir)
    if not fs.isdir(root):
        raise ConfigError(f"A/B log directory {log_dir} does not exist")
    with tempfile.TemporaryDirectory(prefix="ab-logs-") as tmp:
        for table in (*SCHEMAS, RAW_CLICKS):
            Path(tmp, table).mkdir()
            for remote in fs.glob(f"{root.rstrip('/')}/{table}/part-*.parquet"):
                fs.get_file(remote, str(Path(tmp, table, Path(remote).name)))
        yield tmp


def window(logs: ABLogs, since_ts: int | None) -> ABLogs:
    """Only traffic at or after ``since_ts`` (the canary's start): earlier rollouts don't count."""
    if not since_ts:
        return logs
    return ABLogs(logs.requests[logs.requests["ts"] >= since_ts].reset_index(drop=True),
                  logs.impressions[logs.impressions["ts"] >= since_ts].reset_index(drop=True),
                  logs.clicks[logs.clicks["ts"] >= since_ts].reset_index(drop=True),
                  logs.quality)  # counted over the whole log: a duplicate is a fault wherever it is


def attributed_logs(log_dir: str, duplicates: str, cfg: AttributionConfig,
                    spark_master: str = "local[*]") -> tuple[ABLogs, AttributionCounts]:
    """A local sink log directory (``raw_clicks/``) with its clicks credited by the Spark join on
    ``spark_master`` (local, or a cluster / Connect server that shares this machine's disk)."""
    from genctr.monitoring.attribution import run_attribution

    with tempfile.TemporaryDirectory(prefix="attributed-") as work:
        counts = run_attribution(log_dir, work, cfg, master=spark_master)
        impressions, credited, quality = join_clicks(read_table(log_dir, "impressions"), read_table(work, "clicks"),
                                                     duplicates)
    quality = dataclasses.replace(quality, orphan_clicks=counts.orphans, duplicate_clicks=counts.duplicate_clicks)
    return ABLogs(read_table(log_dir, "requests"), impressions, credited, quality), counts


def _collect(log_dir: str | Path, since_ts: int, duplicates: str, attribution_window_s: int,
             spark_master: str = "local[*]") -> tuple[ABLogs, AttributionCounts | None]:
    """The whole checked log of ``log_dir`` (not yet windowed) and the attribution's counts."""
    if isinstance(since_ts, bool) or not isinstance(since_ts, int) or since_ts < 0:
        raise ConfigError(f"since_ts must be epoch seconds >= 0 (0 = all traffic), got {since_ts!r}")
    cfg = AttributionConfig(window_s=attribution_window_s)
    with _local_logs(str(log_dir)) as local:
        if any(Path(local, RAW_CLICKS).glob("part-*.parquet")):
            return attributed_logs(local, duplicates, cfg, spark_master)
        return read_logs(local, duplicates), None


def collect(log_dir: str | Path, since_ts: int = 0, *, duplicates: str = "refuse",
            attribution_window_s: int = DEFAULT_WINDOW_S, spark_master: str = "local[*]") -> ABLogs:
    """The checked A/B logs of ``log_dir`` (path or fsspec URI) at or after ``since_ts`` (0 = all).

    Raw clicks (a sink's log directory) are attributed first (module docstring), by Spark on
    ``spark_master`` (local, or a cluster / Connect server sharing this disk). Raises ConfigError
    for a missing directory, a negative ``since_ts`` or window, DataValidationError (naming the table,
    column or part file) for a malformed table.
    """
    return window(_collect(log_dir, since_ts, duplicates, attribution_window_s, spark_master)[0], since_ts or None)


def arm_counts(logs: ABLogs) -> dict[str, dict[str, int]]:
    """``{"users"|"requests"|"impressions"|"clicks": {arm: n}}`` from the analysis' own arm table."""
    table = arm_metrics(logs)
    return {kind: {arm: int(table.at[arm, kind]) for arm in table.index}
            for kind in ("users", "requests", "impressions", "clicks")}


def collect_to(log_dir: str, since_ts: int, out_dir: str | Path, *, duplicates: str = "refuse",
               attribution_window_s: int = DEFAULT_WINDOW_S, pre_period: bool = False,
               spark_master: str = "local[*]") -> dict[str, Any]:
    """:func:`collect`, written to ``out_dir`` in the log layout (the pipeline's collect step).

    Clicks on impressions before the window are dropped with them, so the copy reads back clean;
    the raw logs' quality counts go to ``quality.json`` for :func:`read_collected`, the attribution's
    (sink logs) to ``attribution.json``. Returns ``{"log_dir", "since_ts", "users"|"requests"|
    "impressions"|"clicks": {arm: n}, "metadata": {"<kind>_<arm>": n}}`` (+ ``"attribution"``).
    With ``pre_period`` (a CUPED policy) each user's totals before ``since_ts`` go to
    ``pre_period.parquet`` (:func:`read_pre_period`).
    """
    full, attributed = _collect(log_dir, since_ts, duplicates, attribution_window_s, spark_master)
    logs = window(full, since_ts or None)
    if pre_period:
        with atomic_path(Path(out_dir) / PRE_PERIOD_FILE) as tmp:
            pre_period_totals(full, since_ts).to_parquet(tmp)
    shown = logs.impressions[["request_id", "item_id"]].drop_duplicates()
    tables = {"requests": logs.requests, "impressions": logs.impressions[list(SCHEMAS["impressions"])],
              "clicks": logs.clicks.merge(shown, on=["request_id", "item_id"], how="inner")}
    for table, df in tables.items():
        append(out_dir, table, df)
    write_json(Path(out_dir) / QUALITY_FILE, dataclasses.asdict(logs.quality))
    counts = arm_counts(logs)
    metadata: dict[str, Any] = {f"{kind}_{arm}": n for kind, arms in counts.items() for arm, n in arms.items()}
    extra: dict[str, Any] = {}
    if attributed is not None:
        write_json(Path(out_dir) / COUNTS_FILE, attributed.to_dict())
        metadata.update({"late_clicks": attributed.late, "orphan_clicks": attributed.orphans})
        extra["attribution"] = attributed.to_dict()
    log.info("collected A/B logs from %s since %s: %s", log_dir, since_ts, metadata)
    return {"log_dir": log_dir, "since_ts": since_ts, **counts, "metadata": metadata, **extra}


def read_pre_period(log_dir: str | Path) -> pd.DataFrame | None:
    """The pre-period totals :func:`collect_to` wrote (None when it was not asked for them)."""
    path = Path(log_dir) / PRE_PERIOD_FILE
    return pd.read_parquet(path) if path.is_file() else None


def read_collected(log_dir: str | Path) -> ABLogs:
    """Logs written by :func:`collect_to` (or any log directory), with the raw logs' quality counts."""
    logs = read_logs(log_dir)
    quality = Path(log_dir) / QUALITY_FILE
    if quality.is_file():
        logs = dataclasses.replace(logs, quality=LogQuality(**json.loads(quality.read_text())))
    return logs


__all__ = ["PRE_PERIOD_FILE", "QUALITY_FILE", "ab_log_dir", "arm_counts", "collect", "collect_to", "read_collected",
           "read_pre_period", "window"]
