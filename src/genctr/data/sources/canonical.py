"""Events (and a behaviour log) already in the canonical schema, as Parquet or CSV, on a local
path or an fsspec URI."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from genctr.data.behaviours import conform_behaviours
from genctr.data.schema import conform_events
from genctr.errors import DataValidationError


def load_canonical(path: str | Path, time_unit: str = "s") -> pd.DataFrame:
    """Read and validate events; ``time_unit`` is the unit of a numeric ``event_time``."""
    uri = str(path)
    return conform_events(_read(uri, "events"), source=uri, time_unit=time_unit)


def load_behaviour_log(path: str | Path, time_unit: str = "s", *, hint: str = "") -> pd.DataFrame:
    """Read and validate a behaviour log (``genctr.data.behaviours``); ``hint`` is added to a not-found error."""
    uri = str(path)
    return conform_behaviours(_read(uri, "behaviour log", hint), source=uri, time_unit=time_unit)


def _read(uri: str, what: str, hint: str = "") -> pd.DataFrame:
    if "://" in uri:
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(uri)
        found, shown = bool(fs.exists(paths[0])), uri
    else:
        found, shown = Path(uri).exists(), f"file {uri}"
    if not found:
        raise DataValidationError(f"{what} {shown} not found{hint}")
    try:
        return pd.read_csv(uri) if uri.endswith(".csv") else pd.read_parquet(uri)
    except Exception as exc:  # broad on purpose: any reader error is the user's file
        raise DataValidationError(f"{what} file {uri} could not be read: {str(exc)[:200]}") from exc
