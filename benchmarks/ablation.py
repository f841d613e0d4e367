"""Offline ablation on MovieLens: backbones x {no pretraining, share, integrate} x {CS, RS},
plus DGenCTR (full transfer and its ablations), over the same seeds for every arm.

Every arm gets the same fine-tuning budget (``--ft-epochs`` passes or ``--ft-max-steps`` steps)
and early-stops on the valid split (``--ft-patience``, on ``--ft-metric``) with its best epoch's
weights restored; each row records the steps it took and the diagnostics of its run.

    python benchmarks/ablation.py --seeds 0 1 2 3 4            # ~1 h on 2 CPU cores
    python benchmarks/ablation.py --summarize-only              # rebuild the report

Each finished arm is appended to ``benchmarks/results/ablation.jsonl`` (a killed run resumes
where it stopped). The summary (mean +- std of AUC / LogLoss / gAUC, paired differences vs
the same backbone without pretraining with paired t-test p-values) goes to
``benchmarks/results/ablation.md`` and a plot to ``ablation.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import pandas as pd

from genctr.config import DataConfig, FeatureConfig
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.run import evaluate_split, init_ctr, train_ctr, train_genctr

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
log = logging.getLogger("ablation")
# GenCTR pretraining budget: steps (0 = PT_EPOCHS passes) and early-stopping patience on the held-out loss
PT_MAX_STEPS, PT_PATIENCE, PT_EPOCHS = 600, 3, 3

DGEN_ARMS = {  # arm name -> (pretraining overrides, fine-tuning transfer)
    "dgenctr_full": ({}, "full"),
    "dgenctr_embedding_only": ({}, "embedding_only"),
    "dgenctr_scorer_only": ({}, "scorer_only"),
    "dgenctr_no_label": ({"label_in_pretraining": False}, "full"),
    "dgenctr_no_diffusion": ({"diffusion": False}, "full"),
    "dgenctr_shared_head": ({"feature_specific_heads": False}, "full"),
}


def build_once(work: Path, category: str, max_seq_len: int) -> Path:
    from genctr.workflow import build_features, export_events

    build = work / f"movielens-{category}-L{max_seq_len}"
    if not (build / "stats.json").exists():
        events = work / f"movielens-{category}.parquet"
        export_events(DataConfig(source="movielens", category=category), events)
        build_features(events, build, FeatureConfig(max_seq_len=max_seq_len))
    return build


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r["backbone"], r["arm"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}


def record(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    log.info("%s", row)


def finetune_config(args, seed: int) -> TrainConfig:
    """The one fine-tuning budget and early-stopping rule every arm gets."""
    return TrainConfig(epochs=args.ft_epochs, max_steps=args.ft_max_steps, patience=args.ft_patience,
                       early_stop_metric=args.ft_metric, batch_size=args.batch_size, lr=args.lr, seed=seed,
                       transfer_lr_mult=args.transfer_lr_mult, transfer_freeze_steps=args.transfer_freeze_steps,
                       label_fraction=args.label_fraction, progress=False)


def run_facts(history: list[dict], train: TrainConfig, prefix: str = "") -> dict:
    """Budget used and diagnostics of a run's history, flat, for one JSONL row."""
    from genctr.training.diagnostics import summarize
    from genctr.training.run import HELDOUT_LOSS, finetune_monitor

    monitor = finetune_monitor(train) if not prefix else HELDOUT_LOSS
    d = summarize(history, monitor, restored=train.patience > 0)
    keep = ("drift_cos_", "integration_norm_ratio", "heldout_")
    facts = {f"{prefix}steps": d.get("steps"), f"{prefix}best_epoch": d.get("best_epoch")}
    facts.update({f"{prefix}{k}": v for k, v in d.get("final", {}).items() if k.startswith(keep)})
    return facts


def run_genctr_arms(data, args, seed, out, done) -> None:
    ft = finetune_config(args, seed)
    pt = TrainConfig(epochs=args.pt_epochs, max_steps=args.pt_max_steps, patience=args.pt_patience,
                     batch_size=args.pt_batch_size, lr=args.pt_lr, seed=seed, progress=False)
    pre, pre_facts = {}, {}
    transfers = [t for t in ("share", "integrate") if t in args.transfers]
    model_set = overrides(ModelConfig, args.model_set, "--model-set")
    pre_set = {k: v for k, v in model_set.items() if k not in ("negatives", "max_seq_len", "embed_dim")}
    for neg in args.negatives:
        if not transfers or all((b, f"{t}_{neg}", seed) in done for b in args.backbones for t in transfers):
            continue
        t0 = time.perf_counter()
        pre[neg], hist = train_genctr(data, ModelConfig(max_seq_len=data.max_seq_len, negatives=neg,
                                                        embed_dim=args.embed_dim, **pre_set), pt)
        pre_facts[neg] = run_facts(hist, pt, prefix="pt_")
        log.info("pretrained %s seed %d in %.0fs: held-out loss %s", neg, seed, time.perf_counter() - t0,
                 [round(h.get("heldout_loss", float("nan")), 3) for h in hist])
    for backbone in args.backbones:
        arms = ([("none", "none", None)] if "none" in args.transfers else []) \
            + [(f"{t}_{n}", t, n) for n in args.negatives for t in transfers]
        for arm, transfer, neg in arms:
            if (backbone, arm, seed) in done:
                continue
            cfg = ModelConfig(backbone=backbone, transfer=transfer, max_seq_len=data.max_seq_len,
                              embed_dim=args.embed_dim, negatives=neg or "cs", **model_set)
            t0 = time.perf_counter()
            model = init_ctr(data, cfg, pre.get(neg), seed)
            hist = train_ctr(data, model, ft)
            m = evaluate_split(model, data, "test")
            record(out, {"backbone": backbone, "arm": arm, "seed": seed, **m, "seconds": time.perf_counter() - t0,
                         **run_facts(hist, ft), **(pre_facts.get(neg, {}) if neg else {})})


def run_dgenctr_arms(data, args, seed, out, done) -> None:
    from genctr.training.run import ctr_objective  # noqa: F401 - same BCE objective as backbones
    from genctr.training.run_dgenctr import init_dgenctr_ctr, train_dgenctr

    ft = finetune_config(args, seed)
    pt = TrainConfig(epochs=args.dg_epochs, max_steps=args.dg_max_steps, patience=args.pt_patience,
                     batch_size=args.dg_batch_size, lr=args.pt_lr, seed=seed, label_fraction=args.label_fraction,
                     progress=False)
    base = DGenCTRConfig(embed_dim=args.dg_dim, n_layers=args.dg_layers, n_heads=2, head_hidden=2 * args.dg_dim,
                         **overrides(DGenCTRConfig, args.dg_set, "--dg-set"))
    pretrained: dict[str, object] = {}
    pre_facts: dict[str, dict] = {}
    arms = [a for a in args.dgenctr_arms if ("dgenctr", a, seed) not in done]
    if ("dgenctr", "dgenctr_none", seed) not in done:
        arms = ["dgenctr_none"] + arms
    for arm in arms:
        t0 = time.perf_counter()
        if arm == "dgenctr_none":
            cfg, pre = base, None
        else:
            over, transfer = DGEN_ARMS[arm]
            key = json.dumps(over, sort_keys=True)
            if key not in pretrained:
                import tempfile

                with tempfile.TemporaryDirectory() as ck:
                    pretrained[key], hist = train_dgenctr(data, dataclasses.replace(base, **over), pt, ck)
                pre_facts[key] = run_facts(hist, pt, prefix="pt_")
            cfg, pre = dataclasses.replace(base, **over, transfer=transfer), pretrained[key]
        model = init_dgenctr_ctr(data, cfg, pre, seed)
        hist = train_ctr(data, model, ft)
        m = evaluate_split(model, data, "test")
        facts = pre_facts.get(json.dumps(DGEN_ARMS[arm][0], sort_keys=True), {}) if arm in DGEN_ARMS else {}
        record(out, {"backbone": "dgenctr", "arm": arm, "seed": seed, **m, "seconds": time.perf_counter() - t0,
                     **run_facts(hist, ft), **facts})


def log_command(path: Path, args: argparse.Namespace) -> list[str]:
    """Remember every command that wrote to this tag (the header lists them all)."""
    import sys

    seen = path.read_text().splitlines() if path.exists() else []
    cmd = " ".join(sys.argv[1:])
    if not args.summarize_only and cmd not in seen:
        seen.append(cmd)
        path.write_text("\n".join(seen) + "\n")
    return seen


def overrides(cls, pairs: list[str], flag: str) -> dict[str, object]:
    """``["schedule=cosine", "timesteps=10"]`` -> overrides of the dataclass ``cls``, typed from its
    fields like ``genctr train --model key=value`` (the dataclass checks ranges when it is built)."""
    from genctr.config import parse_assignments
    from genctr.errors import ConfigError

    try:
        return parse_assignments(cls, pairs, cls.__name__, flag=flag.lstrip("-"))
    except ConfigError as exc:
        raise SystemExit(f"{flag}: {exc}") from None


def summarize(jsonl: Path, md: Path, png: Path, header: str) -> None:
    from scipy.stats import ttest_rel

    df = pd.DataFrame(map(json.loads, jsonl.read_text().splitlines()))
    lines = [header, "", "| backbone | arm | seeds | AUC | LogLoss | gAUC | ΔAUC vs none (paired) | p "
             "| ΔgAUC (paired) | p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for backbone, g in df.groupby("backbone", sort=False):
        base_arm = "dgenctr_none" if backbone == "dgenctr" else "none"
        base = g[g.arm == base_arm].set_index("seed")
        for arm, a in g.groupby("arm", sort=False):
            a = a.set_index("seed")
            cells = [f"{a[k].mean():.4f} ± {a[k].std(ddof=1) if len(a) > 1 else 0:.4f}"
                     for k in ("auc", "logloss", "gauc")]
            seeds = a.index.intersection(base.index)
            for k in ("auc", "gauc"):
                if arm != base_arm and len(seeds) >= 2:
                    d = a.loc[seeds, k] - base.loc[seeds, k]
                    p = ttest_rel(a.loc[seeds, k], base.loc[seeds, k]).pvalue
                    cells += [f"{d.mean():+.4f} ± {d.std(ddof=1):.4f}", f"{p:.3g}"]
                else:
                    cells += ["—", "—"]
            lines.append(f"| {backbone} | {arm} | {len(a)} | {' | '.join(cells)} |")
    md.write_text("\n".join(lines) + "\n")
    _plot(df, png)


def _plot(df: pd.DataFrame, png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(df.groupby("backbone", sort=False))
    fig = Figure(figsize=(4 * len(groups), 4))
    FigureCanvasAgg(fig)
    for i, (backbone, g) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        stats = g.groupby("arm", sort=False)["auc"].agg(["mean", "std"])
        ax.bar(range(len(stats)), stats["mean"], yerr=stats["std"].fillna(0), capsize=3)
        ax.set_xticks(range(len(stats)), stats.index, rotation=60, ha="right", fontsize=8)
        lo = (stats["mean"] - stats["std"].fillna(0)).min()
        ax.set_ylim(lo - 0.01, (stats["mean"] + stats["std"].fillna(0)).max() + 0.005)
        ax.set_title(backbone)
        ax.set_ylabel("test AUC")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--backbones", nargs="*", default=["dnn", "dcnv2", "dcnv2_ta"],
                   help="GenCTR arms' backbones (none given: DGenCTR arms only).")
    p.add_argument("--negatives", nargs="+", default=["cs", "rs"])
    p.add_argument("--transfers", nargs="+", default=["none", "share", "integrate"],
                   choices=["none", "share", "integrate"], help="GenCTR arms to run (default: all).")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a ModelConfig field for every backbone arm and GenCTR pretraining (e.g. init=torch, "
                      "window_overlap=0.5, logq_correction=true).")
    p.add_argument("--dgenctr-arms", nargs="*", default=list(DGEN_ARMS))
    p.add_argument("--category", default="combo", choices=["combo", "first"])
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--embed-dim", type=int, default=16)
    p.add_argument("--ft-epochs", type=int, default=20, help="Fine-tuning budget in passes (the same for every arm).")
    p.add_argument("--ft-max-steps", type=int, default=0, help="Fine-tuning budget in steps (> 0: replaces epochs).")
    p.add_argument("--ft-patience", type=int, default=2, help="Early stopping on the valid split (0 = off).")
    p.add_argument("--ft-metric", default="logloss", choices=["logloss", "auc"])
    p.add_argument("--transfer-lr-mult", type=float, default=1.0, help="Learning-rate factor of transferred tables.")
    p.add_argument("--transfer-freeze-steps", type=int, default=0, help="Steps the transferred tables stay frozen.")
    p.add_argument("--label-fraction", type=float, default=1.0, help="Share of training impressions with labels.")
    p.add_argument("--pt-epochs", type=int, default=PT_EPOCHS)
    p.add_argument("--pt-max-steps", type=int, default=PT_MAX_STEPS, help="GenCTR pretraining steps (0: epochs).")
    p.add_argument("--pt-patience", type=int, default=PT_PATIENCE, help="Pretraining early stopping on held-out loss.")
    p.add_argument("--dg-epochs", type=int, default=2)
    p.add_argument("--dg-max-steps", type=int, default=0, help="DGenCTR pretraining steps (0: epochs).")
    p.add_argument("--dg-dim", type=int, default=32)
    p.add_argument("--dg-layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pt-batch-size", type=int, default=64)
    p.add_argument("--dg-batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pt-lr", type=float, default=1e-3)
    p.add_argument("--dg-set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a DGenCTRConfig field for every DGenCTR arm (sweeps: schedule=cosine, "
                        "timesteps=10, temperature=0.5, ...).")
    p.add_argument("--tag", default="ablation", help="Result file stem under benchmarks/results/.")
    p.add_argument("--work", type=Path, default=HERE / "data")
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.tag}.jsonl"
    ft_budget = f"{args.ft_max_steps} steps" if args.ft_max_steps else f"{args.ft_epochs} epoch(s)"
    pt_budget = f"{args.pt_max_steps} steps" if args.pt_max_steps else f"{args.pt_epochs} epochs"
    dg_budget = f"{args.dg_max_steps} steps" if args.dg_max_steps else f"{args.dg_epochs} epochs"
    header = (f"# Offline ablation ({args.tag})\n\nMovieLens latest-small, category={args.category}, "
              f"L={args.max_seq_len}, embed={args.embed_dim}, fine-tune at most {ft_budget} (early stopping on "
              f"valid {args.ft_metric}, patience {args.ft_patience}) batch {args.batch_size} lr {args.lr}, label "
              f"fraction {args.label_fraction}, GenCTR pretrain at most {pt_budget} (patience {args.pt_patience}), "
              f"DGenCTR pretrain at most {dg_budget} (d={args.dg_dim}, {args.dg_layers} layer). Test split; mean ± "
              "std over "
              "seeds; ΔAUC and ΔgAUC are paired per seed against the same backbone without pretraining "
              "(paired t-test).\n\n"
              "Commands that filled this table (each appends its arms to the same JSONL; rows already there "
              "are skipped):\n\n"
              + "\n".join(f"    python benchmarks/ablation.py {c}"
                          for c in log_command(RESULTS / f"{args.tag}.commands", args)))
    if not args.summarize_only:
        args.work.mkdir(parents=True, exist_ok=True)
        data = FeatureData(str(build_once(args.work, args.category, args.max_seq_len)), args.max_seq_len)
        for seed in args.seeds:
            done = done_keys(out)
            run_genctr_arms(data, args, seed, out, done)
            if args.dgenctr_arms:  # none given: GenCTR arms only
                run_dgenctr_arms(data, args, seed, out, done)
    summarize(out, RESULTS / f"{args.tag}.md", RESULTS / f"{args.tag}.png", header)
    print((RESULTS / f"{args.tag}.md").read_text())


if __name__ == "__main__":
    main()
