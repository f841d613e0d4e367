"""Buffered writing of the A/B log tables (:mod:`genctr.monitoring.logs`) for simulated traffic."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from genctr.monitoring.logs import append

log = logging.getLogger(__name__)
TABLES = ("requests", "impressions", "clicks")  # write order: a click never lands before its impression


class LogBuffer:
    """Collects per-wave frames and appends one part file per table every ``flush_rows`` requests."""

    def __init__(self, log_dir: str | Path, flush_rows: int) -> None:
        self.log_dir = Path(log_dir)
        self.flush_rows = flush_rows
        self._parts: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
        self._rows = 0

    def add(self, requests: pd.DataFrame, impressions: pd.DataFrame, clicks: pd.DataFrame) -> None:
        for table, df in zip(TABLES, (requests, impressions, clicks), strict=True):
            if len(df):
                self._parts[table].append(df)
        self._rows += len(requests)
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for table in TABLES:
            if self._parts[table]:
                path = append(self.log_dir, table, pd.concat(self._parts[table], ignore_index=True))
                log.debug("appended %s", path)
            self._parts[table] = []
        self._rows = 0
