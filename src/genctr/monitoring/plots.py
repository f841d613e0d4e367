"""PNG plots of a canary analysis (matplotlib ``Figure`` + Agg canvas: no pyplot global state)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genctr.atomic import atomic_path
from genctr.errors import DataValidationError

log = logging.getLogger(__name__)

ARM_COLORS = {"champion": "#4C72B0", "canary": "#DD8452"}
BAR_METRICS = [("ctr", "CTR"), ("rpm", "RPM"), ("error_rate", "error rate"), ("latency_p99_ms", "p99 latency (ms)")]


def _save(fig: Figure, png: str | Path) -> Path:
    """Render with Agg and write atomically (temp name, then rename)."""
    path = Path(png)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    log.info("wrote %s", path)
    return path


def plot_uplift_over_time(df: pd.DataFrame, png: str | Path, threshold: float = 0.0,
                          x: str = "impressions", fixed: bool = True) -> Path:
    """CTR and RPM relative uplift (%) with interval bands at each look of :func:`uplift_over_time`.

    The band is the always-valid confidence sequence (``<m>_cs_lo``/``<m>_cs_hi``: it covers the
    true uplift at every look at once, so reading it hour after hour is safe); with ``fixed`` the
    fixed-horizon interval of each look is drawn beside it (dashed: valid for one planned look
    only). A frame without the ``cs`` columns draws its ``<m>_lo``/``<m>_hi`` as the band.
    ``x``: ``"impressions"`` (total of both arms) or ``"time"``. ``threshold``: the policy's CTR
    uplift threshold, drawn on the CTR panel.
    """
    needed = {"cutoff_ts", "impressions_champion", "impressions_canary", "ctr_uplift", "ctr_lo", "ctr_hi",
              "rpm_uplift", "rpm_lo", "rpm_hi"}
    if df.empty or not needed <= set(df.columns):
        raise DataValidationError(f"uplift plot needs a non-empty frame with columns {sorted(needed)}")
    if x == "impressions":
        xs, xlabel = (df["impressions_champion"] + df["impressions_canary"]).to_numpy(), "impressions (both arms)"
    elif x == "time":
        xs, xlabel = pd.to_datetime(df["cutoff_ts"], unit="s").to_numpy(), "time (UTC)"
    else:
        raise DataValidationError(f"uplift plot x must be 'impressions' or 'time', got {x!r}")
    level = f"{100 * (1 - float(df['alpha'].iloc[0])):g}% " if "alpha" in df.columns else ""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, name in ((axes[0], "ctr", "CTR"), (axes[1], "rpm", "RPM")):
        band = "cs" if f"{metric}_cs_lo" in df.columns else None
        lo_col, hi_col = (f"{metric}_cs_lo", f"{metric}_cs_hi") if band else (f"{metric}_lo", f"{metric}_hi")
        est, lo, hi = (100 * df[c].to_numpy(dtype=float) for c in (f"{metric}_uplift", lo_col, hi_col))
        label = f"{level}always-valid CS" if band else f"{level}CI"
        ax.fill_between(xs, lo, hi, alpha=0.25, color=ARM_COLORS["canary"], label=label)
        if fixed and f"{metric}_fixed_lo" in df.columns:
            fixed_label = f"{level}fixed-horizon CI (one look)"
            for col, lab in ((f"{metric}_fixed_lo", fixed_label), (f"{metric}_fixed_hi", None)):
                ax.plot(xs, 100 * df[col].to_numpy(dtype=float), linestyle="--", linewidth=1.0,
                        color=ARM_COLORS["champion"], label=lab)
        ax.plot(xs, est, marker="o", color=ARM_COLORS["canary"], label=f"{name} uplift")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"{name} uplift (%)")
        ax.grid(alpha=0.3)
    axes[0].axhline(100 * threshold, color="green", linestyle="--", label=f"threshold {100 * threshold:+.1f}%")
    axes[0].legend(loc="upper right", fontsize=8)
    unit = f" (unit: {df['unit'].iloc[0]})" if "unit" in df.columns else ""
    axes[0].set_title(f"Canary vs champion: cumulative relative uplift at each look{unit}")
    axes[1].set_xlabel(xlabel)
    return _save(fig, png)


def plot_arm_bars(metrics: pd.DataFrame | dict[str, dict[str, float]], png: str | Path) -> Path:
    """Bars per arm for CTR, RPM, error rate and p99 latency (``metrics``: :func:`arm_metrics`)."""
    frame = metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame.from_dict(metrics, orient="index")
    missing = [m for m, _ in BAR_METRICS if m not in frame.columns]
    if missing:
        raise DataValidationError(f"arm bar plot: metrics lack column(s) {missing}")
    arms = list(frame.index)
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, len(BAR_METRICS))
    for ax, (metric, label) in zip(axes, BAR_METRICS, strict=True):
        values = frame[metric].to_numpy(dtype=float)
        ax.bar(arms, np.nan_to_num(values), color=[ARM_COLORS.get(a, "grey") for a in arms])
        for i, v in enumerate(values):
            ax.annotate(f"{v:.4g}", (i, np.nan_to_num(v)), ha="center", va="bottom", fontsize=8)
        top = np.nanmax(values) if np.isfinite(values).any() and np.nanmax(values) > 0 else 1.0
        ax.set_ylim(0, 1.15 * top)  # room for the labels; a 0 error rate stays at the bottom
        ax.set_title(label)
    return _save(fig, png)


__all__ = ["plot_arm_bars", "plot_uplift_over_time"]
