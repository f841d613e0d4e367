"""Events already in the canonical schema, as Parquet or CSV, on a local path or an fsspec URI."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from genctr.data.schema import conform_events
from genctr.errors import DataValidationError


def load_canonical(path: str | Path, time_unit: str = "s") -> pd.DataFrame:
    """Read and validate events; ``time_unit`` is the unit of a numeric ``event_time``."""
    uri = str(path)
    if "://" in uri:
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(uri)
        if not fs.exists(paths[0]):
            raise DataValidationError(f"events {uri} not found")
    elif not Path(uri).exists():
        raise DataValidationError(f"events file {uri} not found")
    try:
        df = pd.read_csv(uri) if uri.endswith(".csv") else pd.read_parquet(uri)
    except Exception as exc:  # broad on purpose: any reader error is the user's file
        raise DataValidationError(f"events file {uri} could not be read: {str(exc)[:200]}") from exc
    return conform_events(df, source=uri, time_unit=time_unit)
