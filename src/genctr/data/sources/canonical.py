"""Events already in the canonical schema, as Parquet or CSV."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from genctr.data.schema import validate_events
from genctr.errors import DataValidationError


def load_canonical(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"events file {p} not found")
    try:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader error is the user's file
        raise DataValidationError(f"events file {p} could not be read: {exc}") from exc
    return validate_events(df, source=str(p))
