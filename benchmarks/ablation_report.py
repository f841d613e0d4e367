"""The ablation's report: paired differences per label fraction, Holm over the table, the targets.

Rows of ``<tag>.jsonl`` (one per backbone x arm x seed x label fraction; rows written before
the fraction existed are f = 1) become one table per f. Each arm is compared with the same
backbone's no-pretraining arm (``none``; DGenCTR: ``dgenctr_none``) on the seeds both have:
mean difference, its 95 % t interval and the paired t-test, whose p-values are Holm-adjusted
over every comparison of the file for that metric (``genctr.evaluation.paired``): the table is
read all at once, so that is the family a claim is made from.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from genctr.evaluation.paired import holm, paired_difference

METRICS = ("auc", "logloss", "gauc")  # higher, lower, higher is better


def load(jsonl: Path) -> pd.DataFrame:
    df = pd.DataFrame(map(json.loads, jsonl.read_text().splitlines()))
    if "label_fraction" not in df:
        df["label_fraction"] = 1.0
    df["label_fraction"] = df["label_fraction"].fillna(1.0).astype(float)
    return df


def base_arm(backbone: str) -> str:
    return "dgenctr_none" if backbone == "dgenctr" else "none"


def comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (f, backbone, arm): means, and for each metric the paired Δ, CI, p, p_Holm."""
    rows = []
    for (f, backbone), g in df.groupby(["label_fraction", "backbone"], sort=False):
        base = g[g.arm == base_arm(backbone)].set_index("seed")
        for arm, a in g.groupby("arm", sort=False):
            a = a.set_index("seed")
            row = {"label_fraction": f, "backbone": backbone, "arm": arm, "n": len(a),
                   "steps": a["steps"].mean() if "steps" in a else math.nan}
            for k in METRICS:
                row[k], row[f"{k}_std"] = a[k].mean(), a[k].std(ddof=1) if len(a) > 1 else 0.0
            if arm != base_arm(backbone):
                row.update(_deltas(a, base))
            rows.append(row)
    return _with_holm(pd.DataFrame(rows))


def _deltas(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Per metric, the paired Δ = a − b over the seeds both have (frames indexed by seed):
    ``d_<k>``, its 95 % interval ``d_<k>_lo`` / ``d_<k>_hi``, ``p_<k>`` and ``n_<k>``."""
    seeds = sorted(a.index.intersection(b.index))
    out: dict[str, float] = {}
    for k in METRICS:
        d = paired_difference(a.loc[seeds, k].tolist(), b.loc[seeds, k].tolist())
        out.update({f"d_{k}": d.mean, f"d_{k}_lo": d.lo, f"d_{k}_hi": d.hi, f"p_{k}": d.p, f"n_{k}": d.n})
    return out


def _with_holm(cmp: pd.DataFrame) -> pd.DataFrame:
    """``holm_<k>``: the p-values Holm-adjusted over every row of the table, per metric."""
    for k in METRICS:
        if f"p_{k}" in cmp:
            cmp[f"holm_{k}"] = holm(cmp[f"p_{k}"].tolist())
    return cmp


def _cell(r: pd.Series, k: str) -> str:
    if pd.isna(r.get(f"d_{k}", math.nan)):
        return "— | —"
    ci = f"[{r[f'd_{k}_lo']:+.4f}, {r[f'd_{k}_hi']:+.4f}]" if not pd.isna(r[f"d_{k}_lo"]) else ""
    p, ph = r[f"p_{k}"], r[f"holm_{k}"]
    bold = "**" if ph < 0.05 else ""
    return f"{bold}{r[f'd_{k}']:+.4f}{bold} {ci} | {p:.2g} / {ph:.2g}"


def table(cmp: pd.DataFrame) -> list[str]:
    lines = []
    for f, g in cmp.groupby("label_fraction", sort=True):
        lines += ["", f"### f = {f:g} ({100 * f:g} % of the training impressions labelled)", "",
                  "| backbone | arm | seeds | steps | AUC | LogLoss | gAUC | ΔAUC [95 % CI] | p / p_Holm "
                  "| ΔLogLoss [95 % CI] | p / p_Holm | ΔgAUC [95 % CI] | p / p_Holm |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            means = " | ".join(f"{r[k]:.4f} ± {r[f'{k}_std']:.4f}" for k in METRICS)
            lines.append(f"| {r.backbone} | {r.arm} | {r.n} | {r.steps:.0f} | {means} | "
                         + " | ".join(_cell(r, k) for k in METRICS) + " |")
    return lines


def _get(cmp: pd.DataFrame, f: float, backbone: str, arm: str) -> pd.Series | None:
    m = cmp[(cmp.label_fraction == f) & (cmp.backbone == backbone) & (cmp.arm == arm)]
    return None if m.empty else m.iloc[0]


def targets(df: pd.DataFrame, cmp: pd.DataFrame) -> list[str]:
    """The issue's targets, each checked against this table (a line per check, with its numbers)."""
    out = ["", "## Targets, checked against this table", ""]

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'—' if ok is None else ('met' if ok else '**missed**')}: {text}")

    low = sorted(f for f in cmp.label_fraction.unique() if f <= 0.1)
    for f in low:
        for backbone in ("dnn", "dcnv2_ta"):
            r = _get(cmp, f, backbone, "integrate_cs")
            if r is None or pd.isna(r.get("d_auc")):
                continue
            line(r.d_auc >= 0.01 and r.holm_auc < 0.05,
                 f"f = {f:g}, {backbone}: integrate-CS ΔAUC {r.d_auc:+.4f} [{r.d_auc_lo:+.4f}, {r.d_auc_hi:+.4f}], "
                 f"p_Holm {r.holm_auc:.2g} (target ≥ +0.01, p_Holm < 0.05)")
            for transfer in ("share", "integrate"):
                cs, rs = _get(cmp, f, backbone, f"{transfer}_cs"), _get(cmp, f, backbone, f"{transfer}_rs")
                if cs is not None and rs is not None:
                    line(cs.auc >= rs.auc, f"f = {f:g}, {backbone} {transfer}: CS {cs.auc:.4f} vs RS {rs.auc:.4f} "
                                           "(target CS ≥ RS)")
        for corpus in DGENCTR_CORPORA:  # the targets, for each pretraining corpus the table ran
            _dgenctr_targets(df, cmp, f, corpus, line)
    for f in [f for f in cmp.label_fraction.unique() if f == 1.0]:
        worse = []
        for _, r in cmp[(cmp.label_fraction == f) & cmp.d_auc.notna()].iterrows():
            if (r.d_auc < 0 and r.holm_auc < 0.05) or (r.d_logloss > 0 and r.holm_logloss < 0.05):
                worse.append(f"{r.backbone}/{r.arm} (ΔAUC {r.d_auc:+.4f}, ΔLogLoss {r.d_logloss:+.4f})")
        neg = cmp[(cmp.label_fraction == f) & ((cmp.d_auc < 0) | (cmp.d_logloss > 0))]
        line(not worse, "f = 1: no pretrained arm significantly worse than its baseline in AUC or LogLoss "
             f"after Holm ({'; '.join(worse) if worse else 'none'}; {len(neg)} arm(s) worse in the mean)")
    return out


# DGenCTR arm-name suffixes of the pretraining corpora (benchmarks/ablation.py DGEN_ARMS)
DGENCTR_CORPORA = ("", "_behaviours", "_both")


def _dgenctr_targets(df: pd.DataFrame, cmp: pd.DataFrame, f: float, corpus: str, line) -> None:
    """DGenCTR's targets at label fraction f for the arms pretrained on one corpus (arm suffix ``corpus``)."""
    name = f"dgenctr_full{corpus}"
    full, none = _get(cmp, f, "dgenctr", name), _get(cmp, f, "dgenctr", "dgenctr_none")
    if full is None or none is None or pd.isna(full.get("d_auc")):
        return
    label = f"DGenCTR full{corpus.replace('_', ' ')}"
    line(full.d_auc > 0 and full.holm_auc < 0.05,
         f"f = {f:g}: {label} vs no pretraining ΔAUC {full.d_auc:+.4f} "
         f"[{full.d_auc_lo:+.4f}, {full.d_auc_hi:+.4f}], p_Holm {full.holm_auc:.2g}")
    plain = cmp[(cmp.label_fraction == f) & (cmp.arm == "none")]
    if not plain.empty:
        best = plain.loc[plain.auc.idxmax()]
        d = _paired(df, f, ("dgenctr", name), (best.backbone, "none"), "auc")
        line(d.hi >= 0 if not math.isnan(d.hi) else None,
             f"f = {f:g}: {label} {full.auc:.4f} vs the best plain backbone ({best.backbone}) "
             f"{best.auc:.4f}: Δ {d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}] (target: at least match; met = "
             "the 95 % interval reaches 0, i.e. not shown to be below)")
    for other in (f"dgenctr_embedding_only{corpus}", f"dgenctr_scorer_only{corpus}"):
        o = _get(cmp, f, "dgenctr", other)
        if o is not None:
            line(full.auc > o.auc, f"f = {f:g}: {label} {full.auc:.4f} > {other} {o.auc:.4f}")


def _paired(df: pd.DataFrame, f: float, a: tuple[str, str], b: tuple[str, str], k: str):
    x = df[(df.label_fraction == f) & (df.backbone == a[0]) & (df.arm == a[1])].set_index("seed")[k]
    y = df[(df.label_fraction == f) & (df.backbone == b[0]) & (df.arm == b[1])].set_index("seed")[k]
    seeds = sorted(x.index.intersection(y.index))
    return paired_difference(x.loc[seeds].tolist(), y.loc[seeds].tolist())


def summarize(jsonl: Path, md: Path, png: Path, header: str, ceiling: dict | None = None) -> None:
    df = load(jsonl)
    cmp = comparisons(df)
    lines = [header]
    if ceiling:
        lines += ["", f"Ceiling: the world's own click probability scores test AUC {ceiling['auc']:.4f}, "
                      f"LogLoss {ceiling['logloss']:.4f}, gAUC {ceiling['gauc']:.4f}."]
    lines += table(cmp) + targets(df, cmp)
    md.write_text("\n".join(lines) + "\n")
    cmp.to_csv(md.with_suffix(".csv"), index=False)
    plot(cmp, png, ceiling)


def plot(cmp: pd.DataFrame, png: Path, ceiling: dict | None = None) -> None:
    """ΔAUC and ΔgAUC (95 % CI) against f, one column per backbone; one f: test AUC bars per arm."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    backbones = list(dict.fromkeys(cmp.backbone))
    fractions = sorted(cmp.label_fraction.unique())
    if len(fractions) == 1:
        fig = Figure(figsize=(4 * len(backbones), 4))
        FigureCanvasAgg(fig)
        for i, backbone in enumerate(backbones):
            ax = fig.add_subplot(1, len(backbones), i + 1)
            g = cmp[cmp.backbone == backbone]
            ax.bar(range(len(g)), g.auc, yerr=g.auc_std, capsize=3)
            ax.set_xticks(range(len(g)), g.arm, rotation=60, ha="right", fontsize=8)
            ax.set_ylim((g.auc - g.auc_std).min() - 0.01, (g.auc + g.auc_std).max() + 0.005)
            ax.set_title(backbone)
            ax.set_ylabel("test AUC")
    else:
        fig = Figure(figsize=(4.2 * len(backbones), 7))
        FigureCanvasAgg(fig)
        for i, backbone in enumerate(backbones):
            for j, k in enumerate(("auc", "gauc")):
                ax = fig.add_subplot(2, len(backbones), j * len(backbones) + i + 1)
                g = cmp[(cmp.backbone == backbone) & cmp[f"d_{k}"].notna()]
                for n, (arm, a) in enumerate(g.groupby("arm", sort=False)):
                    a = a.sort_values("label_fraction")
                    x = a.label_fraction * (1 + 0.04 * (n - 2))  # a little apart, so the intervals stay legible
                    err = [a[f"d_{k}"] - a[f"d_{k}_lo"], a[f"d_{k}_hi"] - a[f"d_{k}"]]
                    ax.errorbar(x, a[f"d_{k}"], yerr=err, marker="o", ms=3, capsize=2, label=arm)
                ax.axhline(0, color="grey", lw=0.8)
                ax.set_xscale("log")
                ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
                ax.set_title(f"{backbone}: Δ{k.upper() if k == 'auc' else 'gAUC'} vs no pretraining", fontsize=9)
                ax.set_xlabel("labelled share of training impressions")
                if i == 0:
                    ax.set_ylabel(f"Δ test {'AUC' if k == 'auc' else 'gAUC'} (95 % CI)")
                ax.legend(fontsize=6)
    if ceiling:
        fig.suptitle(f"ground-truth click model: test AUC {ceiling['auc']:.4f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def versus(x: pd.DataFrame, y: pd.DataFrame) -> pd.DataFrame:
    """Two tables run on the same seeds with one setting changed (``x`` with it, ``y`` without):
    for every (f, backbone, arm) in both, the paired Δ = x − y per metric with its 95 % interval,
    p and p_Holm over the rows compared."""
    keys = ["label_fraction", "backbone", "arm"]
    without = {key: b.set_index("seed") for key, b in y.groupby(keys, sort=False)}
    rows = [dict(zip(keys, key, strict=True)) | _deltas(a.set_index("seed"), without[key])
            for key, a in x.groupby(keys, sort=False) if key in without]
    return _with_holm(pd.DataFrame(rows))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Paired differences between two ablation tables run on the "
                                            "same seeds (X − Y for every arm in both).")
    p.add_argument("x", type=Path, help="the table with the setting (a .jsonl under benchmarks/results/)")
    p.add_argument("y", type=Path, help="the table without it")
    args = p.parse_args()
    cmp = versus(load(args.x), load(args.y))
    if cmp.empty:
        raise SystemExit(f"{args.x} and {args.y} share no (label fraction, backbone, arm): nothing to compare")
    print(f"{args.x.stem} − {args.y.stem}, paired per seed (95 % t interval; p / p_Holm over these rows)")
    for _, r in cmp.iterrows():
        cells = [f"Δ{k} {r[f'd_{k}']:+.4f} [{r[f'd_{k}_lo']:+.4f}, {r[f'd_{k}_hi']:+.4f}] "
                 f"p {r[f'p_{k}']:.2g} / {r[f'holm_{k}']:.2g}" for k in METRICS]
        print(f"f={r.label_fraction:g} {r.backbone} {r.arm} (n {r.n_auc}): " + "; ".join(cells))


__all__ = ["comparisons", "load", "plot", "summarize", "targets", "versus"]

if __name__ == "__main__":
    main()
