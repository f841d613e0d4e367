"""Evaluation figures (PNG) and ROC points for a KFP ``ClassificationMetrics`` artifact.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, never
through ``pyplot``: no global state, no display needed, safe in worker processes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve

from genctr.errors import ConfigError, DataValidationError
from genctr.evaluation.metrics import check_labels_scores


def roc_points(labels: ArrayLike, scores: ArrayLike, max_points: int = 200) -> dict[str, list[float]]:
    """ROC curve thinned to at most ``max_points`` points, as plain lists.

    Returns ``{"fpr", "tpr", "thresholds"}`` ready for ``ClassificationMetrics.log_roc_curve``.
    The first and last points (0, 0) and (1, 1) are always kept. sklearn's first threshold
    is +inf (nothing predicted positive); it is replaced by the smallest float above the
    highest score, which means the same and serialises as JSON.
    """
    if max_points < 2:
        raise ConfigError(f"roc_points: max_points must be >= 2, got {max_points}")
    y, s = check_labels_scores(labels, scores)
    if y.min() == y.max():
        raise DataValidationError("a ROC curve needs both clicks and non-clicks")
    fpr, tpr, thr = roc_curve(y, s)
    thr = thr.astype(np.float64)
    thr[~np.isfinite(thr)] = np.nextafter(s.max(), np.inf)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def plot_roc(
    labels: ArrayLike, scores_by_model: Mapping[str, ArrayLike], path: str | Path, title: str = "ROC"
) -> Path:
    """ROC curves of one or more models scored on the same rows, on one set of axes."""
    if not scores_by_model:
        raise ConfigError("plot_roc: give at least one model's scores")
    fig = Figure(figsize=(5.5, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, scores in scores_by_model.items():
        y, s = check_labels_scores(labels, scores)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {roc_auc_score(y, s):.4f})")
    return _finish_roc(fig, ax, path, title)


def _finish_roc(fig: Figure, ax: Axes, path: str | Path, title: str) -> Path:
    """Chance diagonal, axes, legend, grid; then save."""
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title=title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roc_points(curves: Mapping[str, Mapping[str, Sequence[float]] | None], path: str | Path,
                    title: str = "ROC", auc: Mapping[str, float] | None = None) -> Path:
    """ROC curves from stored points (``roc_points`` output: ``{"fpr", "tpr"}`` per model)."""
    kept = {k: v for k, v in curves.items() if v}
    if not kept:
        raise ConfigError("plot_roc_points: give at least one curve")
    fig = Figure(figsize=(5.5, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, pts in kept.items():
        label = f"{name} (AUC {auc[name]:.4f})" if auc and name in auc else name
        ax.plot(pts["fpr"], pts["tpr"], lw=1.6, label=label)
    return _finish_roc(fig, ax, path, title)


BOOKKEEPING = frozenset({"epoch", "seconds", "rows_per_s", "step", "lr"})  # logged per epoch, not curves


def plot_training_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    path: str | Path,
    title: str = "training",
) -> Path:
    """Per-epoch curves: metrics named ``*loss*`` on the left panel, the others (AUC…) on the right.

    ``history`` is either ``{"train_loss": [...], "valid_auc": [...]}`` or one dict per
    epoch (``[{"train_loss": .., "valid_auc": ..}, ...]``); missing values are skipped.
    """
    series = _as_series(history)
    if not series:
        raise ConfigError("plot_training_curves: the history holds no metrics")
    series = {k: v for k, v in series.items() if k not in BOOKKEEPING}
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    others = {k: v for k, v in series.items() if k not in losses}
    panels = [(p, t) for p, t in ((losses, "loss"), (others, "metric")) if p]
    fig = Figure(figsize=(5.0 * len(panels), 4.0), dpi=110)
    FigureCanvasAgg(fig)
    for i, (panel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, values in panel.items():
            v = np.asarray(values, dtype=np.float64)
            epochs = np.arange(1, v.size + 1)
            ok = np.isfinite(v)
            ax.plot(epochs[ok], v[ok], marker="o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def _as_series(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    if isinstance(history, Mapping):
        return {str(k): [float(x) for x in v] for k, v in history.items()}
    keys = list(dict.fromkeys(k for epoch in history for k in epoch))
    return {k: [float(epoch.get(k, np.nan)) for epoch in history] for k in keys}


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


__all__ = ["plot_roc", "plot_training_curves", "roc_points"]
