"""Raw clicks: what the click tracker reports, before any attribution.

A click is ``{"request_id": str, "item_id": int, "ts": int}``: the ad request id the ad was shown
in (``f"{ce_id}.{instance}"``, see :mod:`genctr.monitoring.sink.rows`), the ad's item and the click
time in epoch seconds. Raw clicks are appended to ``<log_dir>/raw_clicks/`` (the ``clicks`` schema
of :mod:`genctr.monitoring.logs`), by the sink's ``POST /clicks`` or by ``genctr canary clicks
import``; :mod:`genctr.monitoring.attribution` credits them to impressions into ``clicks/``.

Rows are checked where they enter; a batch with a bad row is refused whole, naming the rows (1-based,
as a person counts lines of a file or items of a JSON array), so nothing of it is half-appended.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from genctr.errors import DataValidationError, describe
from genctr.monitoring.logs import CLICK_SCHEMA, conform

RAW_CLICKS = "raw_clicks"  # table of raw clicks beside requests/ and impressions/
MIN_TS = 631_152_000  # 1990-01-01, as the event schema's lower bound
FUTURE_SLACK_S = 3_600  # a click stamped more than an hour ahead is a clock fault
MAX_REQUEST_ID = 300  # a ce-id (<= 256) plus ".<instance>"
MAX_ERRORS_SHOWN = 5
log = logging.getLogger(__name__)


def _row_problem(row: Any, now: float) -> str | None:
    if not isinstance(row, dict) or set(row) != set(CLICK_SCHEMA):
        return f"must be an object with exactly {sorted(CLICK_SCHEMA)}"
    rid, item, ts = row["request_id"], row["item_id"], row["ts"]
    if not isinstance(rid, str) or not rid.strip() or len(rid) > MAX_REQUEST_ID:
        return f"request_id must be a non-empty string of at most {MAX_REQUEST_ID} characters"
    if type(item) is not int or not -(2**63) <= item < 2**63:
        return f"item_id must be a 64-bit integer, got {describe(item)}"
    if type(ts) is float and ts.is_integer():
        ts = int(ts)
    if type(ts) is not int:
        return f"ts must be whole epoch seconds, got {describe(ts)}"
    if not MIN_TS <= ts <= now + FUTURE_SLACK_S:
        return f"ts {ts} is outside [1990-01-01, now + 1 h] (epoch seconds; not milliseconds?)"
    return None


def check_clicks(rows: Iterable[Any], where: str = "click") -> pd.DataFrame:
    """Rows (dicts) -> the clicks frame; DataValidationError naming up to five bad rows (1-based)."""
    now = time.time()
    good: list[dict[str, Any]] = []
    bad: list[str] = []
    n = 0
    for n, row in enumerate(rows, start=1):
        problem = _row_problem(row, now)
        if problem is None:
            good.append({"request_id": row["request_id"], "item_id": row["item_id"], "ts": int(row["ts"])})
        else:
            bad.append(f"{where} {n}: {problem}")
    if bad:
        shown = "; ".join(bad[:MAX_ERRORS_SHOWN]) + (f"; and {len(bad) - MAX_ERRORS_SHOWN} more bad rows"
                                                      if len(bad) > MAX_ERRORS_SHOWN else "")
        raise DataValidationError(f"{len(bad)} of {n} clicks refused, nothing appended: {shown}")
    if not good:
        raise DataValidationError("no clicks given: send a JSON array or NDJSON of "
                                  "{\"request_id\", \"item_id\", \"ts\"} objects")
    return pd.DataFrame(good).astype(CLICK_SCHEMA)


def parse_click_body(body: bytes) -> list[Any]:
    """A JSON array of click objects, or NDJSON (one object per line; blank lines skipped)."""
    text = body.strip()
    if text.startswith(b"["):
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise DataValidationError(f"clicks body is not a valid JSON array ({str(exc)[:120]})") from None
        return list(rows)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            rows.append(None)  # keeps line numbers; refused below as a bad row
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise DataValidationError(f"clicks body line {n} is not JSON: send a JSON array or NDJSON "
                                      "(one {\"request_id\", \"item_id\", \"ts\"} object per line)") from None
    return rows


def read_click_file(path: str | Path) -> pd.DataFrame:
    """A CSV, JSON (array), NDJSON (.jsonl/.ndjson) or Parquet file of clicks, checked row by row."""
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"click file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson"):
        rows = parse_click_body(p.read_bytes())
    elif suffix == ".csv":
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataValidationError(f"click file {p} is not readable CSV: {describe(str(exc), 200, raw=True)}"
                                      ) from exc
        rows = [_csv_row(r) for r in df.to_dict("records")]
    elif suffix == ".parquet":
        try:
            df = pd.read_parquet(p)
        except (OSError, ValueError) as exc:
            raise DataValidationError(f"click file {p} is not readable Parquet: {describe(str(exc), 200, raw=True)}"
                                      ) from exc
        rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict("records")]
    else:
        raise DataValidationError(f"click file {p}: unknown format {suffix or '(none)'}; use .csv, .json, "
                                  ".jsonl/.ndjson or .parquet")
    return check_clicks(rows, where=f"{p.name} row")


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    """CSV text cells -> typed values where they parse (a cell that does not is refused by the check)."""
    out: dict[str, Any] = dict(row)
    for key in ("item_id", "ts"):
        if key in out:
            try:
                out[key] = int(out[key])
            except ValueError:
                pass
    return out


def read_raw_clicks(log_dir: str | Path) -> pd.DataFrame:
    """Every part of ``<log_dir>/raw_clicks/`` (a local directory), checked; empty when there is none."""
    d = Path(log_dir) / RAW_CLICKS
    parts = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
    frames = []
    for p in parts:
        try:
            frames.append(conform(pd.read_parquet(p), "clicks"))
        except (OSError, ValueError, DataValidationError) as exc:  # unreadable or off schema: name the part
            raise DataValidationError(f"raw clicks part {p}: {describe(str(exc), 200, raw=True)}") from exc
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in CLICK_SCHEMA.items()})
    return pd.concat(frames, ignore_index=True)


def import_clicks(path: str | Path, out: str) -> dict[str, Any]:
    """Append a file's clicks to ``<out>/raw_clicks/`` as one part (path or fsspec URI).

    The part is named by the file's content hash, so importing the same file twice writes the same
    part again instead of doubling its clicks.
    """
    from genctr.monitoring.sink.parts import PartWriter

    df = read_click_file(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]
    name = f"part-import-{digest}.parquet"
    written = PartWriter(out).write(RAW_CLICKS, name, df)
    log.info("imported %d clicks from %s into %s", len(df), path, written)
    return {"file": str(path), "clicks": len(df), "part": written}


__all__ = ["RAW_CLICKS", "check_clicks", "import_clicks", "parse_click_body", "read_click_file", "read_raw_clicks"]
