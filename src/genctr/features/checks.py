"""Data checks as workflow steps: run a GX suite on a path, raise on failure, return the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from genctr.errors import DataValidationError
from genctr.features.expectations import ExpectationsConfig, run_events_suite, run_samples_suite


def check_events(events: str | Path, report_dir: str | Path, cfg: ExpectationsConfig | None = None) -> Path:
    """GX events suite on a canonical events Parquet file/directory; returns the HTML report."""
    p = Path(events)
    if not p.exists():
        raise DataValidationError(f"events {p} not found")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # broad on purpose: an unreadable file is the user's input
        raise DataValidationError(f"events {p} could not be read as Parquet: {exc}") from exc
    result = run_events_suite(df, cfg, report_dir, raise_on_failure=True)
    return Path(result.html_path)


def check_samples(build: str | Path, report_dir: str | Path, cfg: ExpectationsConfig | None = None) -> Path:
    """GX samples suite on a feature build (pandas engine); returns the HTML report."""
    result = run_samples_suite(build, cfg, report_dir, raise_on_failure=True)
    return Path(result.html_path)


def run_checks(events: str | Path | None, build: str | Path | None,
               report_dir: str | Path | None) -> list[Path]:
    """Both suites where given; reports default to ``<input>.checks/``."""
    reports = []
    if events is not None:
        reports.append(check_events(events, report_dir or Path(f"{events}.checks")))
    if build is not None:
        reports.append(check_samples(build, report_dir or Path(build) / "checks"))
    return reports
