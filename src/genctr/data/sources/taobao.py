"""Taobao UserBehavior CSV (``user,item,category,behavior,timestamp``, no header) -> events.

A ``pv`` row is a click. The log holds no unclicked impressions, so each click is paired
with ``negatives_per_click`` unclicked impressions of items drawn uniformly from the log's
items (with their own categories) at the same time — the usual construction for this data.
Other behaviour types (cart, fav, buy) are not impressions: without the behaviour log they
are dropped; with it they become the log (event_type = the behaviour), and the impressions
are the same either way. A cart/fav/buy row repeated exactly in the CSV is one behaviour: the
repeats are dropped (and counted in a warning) before the log is validated.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from genctr.data.behaviours import UNIQUE_KEY, conform_behaviours
from genctr.data.schema import conform_events
from genctr.errors import DataValidationError

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "category_id", "behavior", "event_time"]
BEHAVIORS = {"pv", "buy", "cart", "fav"}


def load_taobao(path: str | Path, negatives_per_click: int = 1, seed: int = 0) -> pd.DataFrame:
    """Canonical events of the UserBehavior CSV at ``path``."""
    return taobao_source(path, negatives_per_click, seed)[0]


def taobao_source(path: str | Path, negatives_per_click: int = 1, seed: int = 0,
                  behaviour_log: bool = False) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(events, log)``: the log (the cart/fav/buy rows) only with ``behaviour_log``."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"Taobao: {p} not found")
    raw = pd.read_csv(p, header=None, names=COLUMNS, dtype={"behavior": "string"})
    if raw.empty:
        raise DataValidationError(f"Taobao: {p} has no rows")
    unknown = set(raw["behavior"].dropna().unique()) - BEHAVIORS
    if unknown:
        raise DataValidationError(f"Taobao: unknown behavior value(s) {sorted(unknown)}; expected {sorted(BEHAVIORS)}")
    events = _impressions(raw, negatives_per_click, seed)
    if not behaviour_log:
        return events, None
    rows = raw[raw["behavior"].isin(["cart", "fav", "buy"])].rename(columns={"behavior": "event_type"})
    repeats = rows.duplicated([*UNIQUE_KEY, "category_id"])
    if repeats.any():
        log.warning("Taobao: %d cart/fav/buy rows repeat an earlier row exactly; each is kept once", int(repeats.sum()))
        rows = rows[~repeats]
    return events, conform_behaviours(rows.reset_index(drop=True), source="taobao")


def _impressions(raw: pd.DataFrame, negatives_per_click: int, seed: int) -> pd.DataFrame:
    """The pv rows as clicks, each with ``negatives_per_click`` sampled unclicked impressions."""
    clicks = raw[raw["behavior"] == "pv"].drop(columns="behavior").reset_index(drop=True)
    for col in ("user_id", "item_id", "category_id", "event_time"):
        if clicks[col].isna().any() or not pd.api.types.is_numeric_dtype(clicks[col]):
            raise DataValidationError(f"Taobao: column '{col}' must be integers without nulls")
    items = clicks.drop_duplicates("item_id")[["item_id", "category_id"]].to_numpy()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(items), size=len(clicks) * negatives_per_click)
    negs = pd.DataFrame(
        {
            "user_id": np.repeat(clicks["user_id"].to_numpy(), negatives_per_click),
            "item_id": items[pick, 0],
            "category_id": items[pick, 1],
            "event_time": np.repeat(clicks["event_time"].to_numpy(), negatives_per_click),
        }
    )
    df = pd.concat([clicks.assign(clicked=1), negs.assign(clicked=0)], ignore_index=True)
    df.insert(0, "request_id", np.arange(len(df), dtype="int64"))
    return conform_events(df, source="taobao")
