"""Early stopping on a held-out metric, decided from the run's history alone.

Every decision (the best epoch, whether patience has run out) is a function of the per-epoch
history rows, which checkpoints store, so a resumed run stops exactly where an uninterrupted
one would. The best epoch's weights are not kept in memory: they are its checkpoint.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("min", "max")


@dataclass(frozen=True)
class Monitor:
    """Which history key decides (``key``) and whether lower or higher is better (``mode``)."""

    key: str
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"monitor mode must be one of {MODES}, got {self.mode!r}")

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self.mode == "min" else a > b


def _scored(history: Sequence[dict[str, Any]], monitor: Monitor) -> list[tuple[int, float]]:
    """(epoch, value) of trained epochs (epoch >= 1; row 0 is the state before training) with a
    finite monitored value."""
    out = []
    for row in history:
        value = row.get(monitor.key)
        if row.get("epoch", 0) >= 1 and isinstance(value, (int, float)) and math.isfinite(value):
            out.append((int(row["epoch"]), float(value)))
    return out


def best_epoch(history: Sequence[dict[str, Any]], monitor: Monitor) -> int | None:
    """The trained epoch (1-based) with the best monitored value, the earliest on ties; None if none."""
    best: tuple[int, float] | None = None
    for epoch, value in _scored(history, monitor):
        if best is None or monitor.better(value, best[1]):
            best = (epoch, value)
    return None if best is None else best[0]


def should_stop(history: Sequence[dict[str, Any]], monitor: Monitor, patience: int) -> bool:
    """True once ``patience`` (> 0) evaluated epochs in a row followed the best without beating it."""
    if patience <= 0:
        return False
    best = best_epoch(history, monitor)
    if best is None:
        return False
    return sum(1 for epoch, _ in _scored(history, monitor) if epoch > best) >= patience


__all__ = ["MODES", "Monitor", "best_epoch", "should_stop"]
