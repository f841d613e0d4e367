"""Offline ablation: backbones x {no pretraining, share, integrate} x {CS, RS}, plus DGenCTR (full
transfer and its ablations), over the same seeds for every arm, at one or more label fractions.

The premise both methods rest on is that behaviour data far exceeds labelled data. So every
seed pretrains once on *all* training-period behaviour, and each arm then fine-tunes on a share
f of the labelled training impressions (``--fractions``; histories stay complete). DGenCTR's
pretraining sees the label field only where it is labelled, so it pretrains once per (seed, f).

Every arm gets the same fine-tuning budget (``--ft-epochs`` passes or ``--ft-max-steps`` steps)
and early-stops on the valid split (``--ft-patience``, on ``--ft-metric``) with its best epoch's
weights restored; each row records the steps it took and the diagnostics of its run.

    python benchmarks/ablation.py --fractions 0.02 0.05 0.1 0.25 1 --tag premise_movielens
    python benchmarks/ablation.py --source synthetic --synthetic-events 2000000 --tag premise_synthetic
    python benchmarks/ablation.py --summarize-only --tag premise_movielens   # rebuild the report

Each finished arm is appended to ``benchmarks/results/<tag>.jsonl`` (a killed run resumes where
it stopped). The report (``ablation_report.py``: paired differences with 95 % CIs, Holm-corrected
p-values over the whole table, the issue's targets checked) goes to ``<tag>.md`` and a plot of
the gains against f to ``<tag>.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from ablation_report import summarize  # beside this script: its folder is on sys.path when run
from genctr.atomic import atomic_path
from genctr.config import DataConfig, FeatureConfig
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.training.config import TrainConfig
from genctr.training.data import FeatureData
from genctr.training.run import evaluate_split, init_ctr, train_ctr, train_genctr

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
log = logging.getLogger("ablation")
# GenCTR pretraining budget: steps (0 = PT_EPOCHS passes) and early-stopping patience on the held-out loss.
# Patience 10, not 3: on MovieLens at L = 50 an epoch is 24 steps, and CS pretraining's held-out loss sits on
# a plateau from epoch 3 to 9 before it falls (2.44 -> 2.34, next-item AUC 0.828 -> 0.856, past popularity's
# 0.833); patience 3 stopped it on the plateau, at 72 of its 600 steps (RESULTS.md)
PT_MAX_STEPS, PT_PATIENCE, PT_EPOCHS = 600, 10, 3

# arm name -> (pretraining overrides, fine-tuning model overrides: the transfer above all, fine-tuning
# TrainConfig overrides); an arm's pretraining is shared with every arm of the same pretraining overrides
DGEN_ARMS: dict[str, tuple[dict, dict, dict]] = {
    "dgenctr_full": ({}, {"transfer": "full"}, {}),
    "dgenctr_embedding_only": ({}, {"transfer": "embedding_only"}, {}),
    "dgenctr_scorer_only": ({}, {"transfer": "scorer_only"}, {}),
    "dgenctr_no_label": ({"label_in_pretraining": False}, {"transfer": "full"}, {}),
    "dgenctr_no_diffusion": ({"diffusion": False}, {"transfer": "full"}, {}),
    "dgenctr_shared_head": ({"feature_specific_heads": False}, {"transfer": "full"}, {}),
    # the pretraining corpus (DGenCTRConfig.pretrain_samples): labelled impressions + every training behaviour
    "dgenctr_full_behaviours": ({"pretrain_samples": "behaviours"}, {"transfer": "full"}, {}),
    "dgenctr_full_both": ({"pretrain_samples": "both"}, {"transfer": "full"}, {}),
    "dgenctr_embedding_only_behaviours": ({"pretrain_samples": "behaviours"}, {"transfer": "embedding_only"}, {}),
    "dgenctr_scorer_only_behaviours": ({"pretrain_samples": "behaviours"}, {"transfer": "scorer_only"}, {}),
    # a fresh label head (value table e(0), e(1) and heads G_k) on the pretrained network, which fine-tunes
    # (encoder) or stays frozen (probe: what the pretrained representation alone tells of the click)
    "dgenctr_encoder": ({}, {"transfer": "encoder"}, {}),
    "dgenctr_probe": ({}, {"transfer": "encoder", "transfer_group": "all"}, {"transfer_lr_mult": 0.0}),
}


def build_once(args: argparse.Namespace) -> tuple[Path, Path]:
    """The feature build this run reads (made once, reused by every later run): (build, events)."""
    from genctr.workflow import build_features, export_events

    work = args.work
    if args.source == "synthetic":
        name = f"synthetic-{args.synthetic_events}-u{args.synthetic_users}-i{args.synthetic_items}"
        data = DataConfig(source="synthetic", synthetic_events=args.synthetic_events,
                          synthetic_users=args.synthetic_users, synthetic_items=args.synthetic_items)
    else:
        name = f"movielens-{args.category}"
        data = DataConfig(source="movielens", category=args.category, behaviour_log=args.behaviour_log)
    events = work / f"{name}.parquet"
    # the behaviour log (MovieLens: every rating) is exported beside the impressions, which it leaves unchanged
    behaviours = work / f"{name}-behaviours.parquet" if args.behaviour_log else None
    if not events.exists() or (behaviours is not None and not behaviours.exists()):
        export_events(data, events, behaviours_out=behaviours)
    if args.wrong_category_frac > 0:
        events = corrupt_categories(events, args.wrong_category_frac, work / f"{name}-wc{args.wrong_category_frac:g}")
    blog = "-blog" if behaviours is not None else ""
    build = work / f"{events.stem if events.suffix else events.name}{blog}-L{args.max_seq_len}"
    if not (build / "stats.json").exists():
        build_features(events, build, FeatureConfig(max_seq_len=args.max_seq_len), behaviours=behaviours)
    return build, events


def corrupt_categories(events: Path, frac: float, out_stem: Path, seed: int = 12345) -> Path:
    """A copy of ``events`` where a seeded share ``frac`` of the items carry a wrong category.

    Each chosen item gets one other category, drawn uniformly from the categories in the log,
    on every one of its impressions (a catalogue error, not noise per impression). The same
    items are wrong for every seed of a run, so the arms stay paired."""
    import numpy as np
    import pandas as pd

    # appended, not with_suffix: a stem like "…-wc0.3" would lose its ".3", and every fraction share one file
    out = out_stem.parent / f"{out_stem.name}.parquet"
    if out.exists():
        return out
    df = pd.read_parquet(events)
    items = np.sort(df["item_id"].unique())
    cates = np.sort(df["category_id"].unique())
    rng = np.random.default_rng(seed)
    wrong = rng.choice(items, size=round(frac * len(items)), replace=False)
    first = df.drop_duplicates("item_id").set_index("item_id")["category_id"]
    # a uniformly drawn *other* category: shift the item's index by 1..n_cates-1 (mod n_cates)
    pos = np.searchsorted(cates, first.loc[wrong].to_numpy())
    new = cates[(pos + rng.integers(1, len(cates), size=len(wrong))) % len(cates)]
    remap = pd.Series(new, index=wrong)
    hit = df["item_id"].isin(remap.index)
    df.loc[hit, "category_id"] = df.loc[hit, "item_id"].map(remap).astype("int64")
    with atomic_path(out) as tmp:  # a unique temp name: concurrent runs may build the same file
        df.to_parquet(tmp, index=False)
    log.info("%d of %d items (%.0f %%) given a wrong category -> %s", len(wrong), len(items), 100 * frac, out)
    return out


def ceiling(build: Path, events: Path) -> dict | None:
    """Test AUC / LogLoss of the world's own click probability (synthetic events carry ``true_ctr``)."""
    import pyarrow.dataset as ds

    from genctr.evaluation.metrics import evaluate

    cols = ds.dataset(events).schema.names
    if "true_ctr" not in cols:
        return None
    truth = ds.dataset(events).to_table(columns=["request_id", "true_ctr"]).to_pandas().set_index("request_id")
    test = ds.dataset(build / "samples" / "test").to_table(columns=["sample_id", "user_id", "label"]).to_pandas()
    p = truth.loc[test["sample_id"], "true_ctr"].to_numpy()
    m = evaluate(test["label"].to_numpy(), p, test["user_id"].to_numpy(), from_logits=False)
    return {k: float(m[k]) for k in ("auc", "logloss", "gauc")}


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r["backbone"], r["arm"], r["seed"], float(r.get("label_fraction", 1.0)))
            for r in map(json.loads, path.read_text().splitlines())}


def record(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    log.info("%s", {k: v for k, v in row.items() if not k.startswith(("pt_", "drift_"))})


def finetune_config(args, seed: int, fraction: float) -> TrainConfig:
    """The one fine-tuning budget and early-stopping rule every arm gets."""
    return TrainConfig(epochs=args.ft_epochs, max_steps=args.ft_max_steps, patience=args.ft_patience,
                       early_stop_metric=args.ft_metric, batch_size=args.batch_size, lr=args.lr, seed=seed,
                       transfer_lr_mult=args.transfer_lr_mult, transfer_freeze_steps=args.transfer_freeze_steps,
                       decoder_lr_mult=args.decoder_lr_mult, label_fraction=fraction,
                       label_sampling=args.label_sampling,
                       progress=False)


def run_facts(history: list[dict], train: TrainConfig, prefix: str = "") -> dict:
    """Budget used and diagnostics of a run's history, flat, for one JSONL row."""
    from genctr.training.diagnostics import summarize as summarize_run
    from genctr.training.run import HELDOUT_LOSS, finetune_monitor

    monitor = finetune_monitor(train) if not prefix else HELDOUT_LOSS
    d = summarize_run(history, monitor, restored=train.patience > 0)
    keep = ("drift_cos_", "integration_norm_ratio", "heldout_")
    facts = {f"{prefix}steps": d.get("steps"), f"{prefix}best_epoch": d.get("best_epoch")}
    facts.update({f"{prefix}{k}": v for k, v in d.get("final", {}).items() if k.startswith(keep)})
    return facts


def genctr_arms(args) -> list[tuple[str, str, str | None]]:
    transfers = [t for t in ("share", "integrate") if t in args.transfers]
    return ([("none", "none", None)] if "none" in args.transfers else []) \
        + [(f"{t}_{n}", t, n) for n in args.negatives for t in transfers]


def run_genctr_arms(data, args, seed, out, done) -> None:
    """Pretrain once per negative sampler (all training behaviour), then fine-tune every arm at every f."""
    pt = TrainConfig(epochs=args.pt_epochs, max_steps=args.pt_max_steps, patience=args.pt_patience,
                     batch_size=args.pt_batch_size, lr=args.pt_lr, seed=seed, progress=False)
    arms = genctr_arms(args)
    model_set = overrides(ModelConfig, args.model_set, "--model-set")
    pre_set = {k: v for k, v in model_set.items() if k not in ("negatives", "max_seq_len", "embed_dim")}
    pre, pre_facts = {}, {}
    for neg in args.negatives:
        if all((b, a, seed, f) in done for b in args.backbones for a, _, n in arms if n == neg
               for f in args.fractions):
            continue
        t0 = time.perf_counter()
        pre[neg], hist = train_genctr(data, ModelConfig(max_seq_len=data.max_seq_len, negatives=neg,
                                                        embed_dim=args.embed_dim, **pre_set), pt)
        pre_facts[neg] = {**run_facts(hist, pt, prefix="pt_"), "pt_seconds": time.perf_counter() - t0}
        log.info("pretrained %s seed %d in %.0fs: held-out loss %s", neg, seed, time.perf_counter() - t0,
                 [round(h.get("heldout_loss", float("nan")), 3) for h in hist])
    for fraction in args.fractions:
        ft = finetune_config(args, seed, fraction)
        for backbone in args.backbones:
            for arm, transfer, neg in arms:
                if (backbone, arm, seed, fraction) in done:
                    continue
                cfg = ModelConfig(backbone=backbone, transfer=transfer, max_seq_len=data.max_seq_len,
                                  embed_dim=args.embed_dim, negatives=neg or "cs", **model_set)
                t0 = time.perf_counter()
                model = init_ctr(data, cfg, pre.get(neg), seed)
                hist = train_ctr(data, model, ft)
                m = evaluate_split(model, data, "test")
                record(out, {"backbone": backbone, "arm": arm, "seed": seed, "label_fraction": fraction, **m,
                             "seconds": time.perf_counter() - t0, **run_facts(hist, ft),
                             **(pre_facts.get(neg, {}) if neg else {})})


def run_dgenctr_arms(data, args, seed, out, done) -> None:
    from genctr.training.run_dgenctr import init_dgenctr_ctr, train_dgenctr

    base = DGenCTRConfig(embed_dim=args.dg_dim, n_layers=args.dg_layers, n_heads=2, head_hidden=2 * args.dg_dim,
                         **overrides(DGenCTRConfig, args.dg_set, "--dg-set"))
    for fraction in args.fractions:
        ft = finetune_config(args, seed, fraction)
        # the label field is pretrained on the labelled share only: one pretraining per fraction
        pt = TrainConfig(epochs=args.dg_epochs, max_steps=args.dg_max_steps, patience=args.pt_patience,
                         batch_size=args.dg_batch_size, lr=args.pt_lr, weight_decay=args.dg_weight_decay,
                         seed=seed, label_fraction=fraction,
                         label_sampling=args.label_sampling, progress=False)
        pretrained: dict[str, object] = {}
        pre_facts: dict[str, dict] = {}
        arms = ["dgenctr_none", *args.dgenctr_arms]
        for arm in [a for a in arms if ("dgenctr", a, seed, fraction) not in done]:
            t0 = time.perf_counter()
            if arm == "dgenctr_none":
                cfg, pre, facts, ft_train = base, None, {}, {}
            else:
                over, ft_model, ft_train = DGEN_ARMS[arm]
                key = json.dumps(over, sort_keys=True)
                if key not in pretrained:
                    with tempfile.TemporaryDirectory() as ck:
                        pretrained[key], hist = train_dgenctr(data, dataclasses.replace(base, **over), pt, ck)
                    pre_facts[key] = {**run_facts(hist, pt, prefix="pt_"), "pt_seconds": time.perf_counter() - t0}
                cfg, pre, facts = dataclasses.replace(base, **over, **ft_model), pretrained[key], pre_facts[key]
            arm_ft = dataclasses.replace(ft, **ft_train)
            model = init_dgenctr_ctr(data, cfg, pre, seed)
            hist = train_ctr(data, model, arm_ft)
            m = evaluate_split(model, data, "test")
            record(out, {"backbone": "dgenctr", "arm": arm, "seed": seed, "label_fraction": fraction, **m,
                         "seconds": time.perf_counter() - t0, **run_facts(hist, arm_ft), **facts})


# Options that only choose which rows a table holds; ``--pool`` lets its sources differ in these alone.
ROW_CHOICES = ("seeds", "fractions", "backbones", "transfers", "negatives", "dgenctr_arms", "tag", "pool",
               "summarize_only", "work")


def arm_names(args: argparse.Namespace) -> set[tuple[str, str]]:
    """(backbone, arm) of every arm the options name, DGenCTR's included."""
    names = {(b, a) for b in args.backbones for a, _, _ in genctr_arms(args)}
    if args.dgenctr_arms:
        names |= {("dgenctr", a) for a in ["dgenctr_none", *args.dgenctr_arms]}
    return names


def pool(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> int:
    """Write ``out`` from the rows of the ``--pool`` tags that these options name (seeds, fractions, arms),
    copied unchanged; returns how many. Every source must have been run with these settings (the options
    outside ``ROW_CHOICES``), and no (backbone, arm, seed, f) may come from two sources."""
    import shlex

    wanted_arms, seeds, fractions = arm_names(args), set(args.seeds), {float(f) for f in args.fractions}
    mine = {k: v for k, v in vars(args).items() if k not in ROW_CHOICES}
    rows: dict[tuple, dict] = {}
    for tag in args.pool:
        src, commands = RESULTS / f"{tag}.jsonl", RESULTS / f"{tag}.commands"
        if tag == args.tag:
            raise SystemExit(f"--pool: {tag} is the table being written; give the pooled table another --tag")
        if not src.exists() or not commands.exists():
            raise SystemExit(f"--pool: no results for tag {tag!r} ({src} and {commands} must both exist)")
        ran = vars(parser.parse_args(shlex.split(commands.read_text().splitlines()[0])))
        differ = sorted(k for k, v in mine.items() if ran.get(k) != v)
        if differ:
            raise SystemExit(f"--pool: {tag} was run with other settings than this command: "
                             + ", ".join(f"{k}={ran.get(k)!r} here {mine[k]!r}" for k in differ))
        for row in map(json.loads, src.read_text().splitlines()):
            key = (row["backbone"], row["arm"], row["seed"], float(row.get("label_fraction", 1.0)))
            if key[:2] not in wanted_arms or key[2] not in seeds or key[3] not in fractions:
                continue
            if key in rows:
                raise SystemExit(f"--pool: {key} is in two of the pooled tables; pool tables of distinct seeds")
            rows[key] = row
    if not rows:
        raise SystemExit("--pool: no row of those tables matches --seeds, --fractions and the arms named")
    with atomic_path(out) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    ceilings = [RESULTS / f"{tag}.ceiling.json" for tag in args.pool]
    if ceilings[0].exists():  # one world (the settings agree), so one ceiling
        with atomic_path(RESULTS / f"{args.tag}.ceiling.json") as tmp:
            tmp.write_text(ceilings[0].read_text())
    log.info("pooled %d rows of %s into %s", len(rows), ", ".join(args.pool), out)
    return len(rows)


def log_command(path: Path, args: argparse.Namespace) -> list[str]:
    """Remember every command that wrote to this tag (the header lists them all)."""
    import shlex

    seen = path.read_text().splitlines() if path.exists() else []
    cmd = shlex.join(sys.argv[1:])  # quoted: --summarize-only parses the first one back
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


def header(args: argparse.Namespace) -> str:
    ft_budget = f"{args.ft_max_steps} steps" if args.ft_max_steps else f"{args.ft_epochs} epoch(s)"
    pt_budget = f"{args.pt_max_steps} steps" if args.pt_max_steps else f"{args.pt_epochs} epochs"
    dg_budget = f"{args.dg_max_steps} steps" if args.dg_max_steps else f"{args.dg_epochs} epochs"
    data = (f"synthetic world, {args.synthetic_events:,} events, {args.synthetic_users:,} users, "
            f"{args.synthetic_items:,} items" if args.source == "synthetic"
            else f"MovieLens latest-small, category={args.category}")
    if args.wrong_category_frac:
        data += f", {100 * args.wrong_category_frac:g} % of items with a wrong category"
    if args.behaviour_log:
        data += ", every rating a behaviour (the behaviour log)"
    if args.pool:
        data += f" (rows pooled unchanged from the tables {', '.join(args.pool)})"
    return (f"# Offline ablation ({args.tag})\n\n{data}, L={args.max_seq_len}, embed={args.embed_dim}, "
            f"fine-tune at most {ft_budget} (early stopping on valid {args.ft_metric}, patience "
            f"{args.ft_patience}) batch {args.batch_size} lr {args.lr} (transferred tables x{args.transfer_lr_mult:g}, "
            f"integrated decoder x{args.decoder_lr_mult:g}) on a share f of the training impressions "
            f"(by {args.label_sampling}), GenCTR pretrain at most {pt_budget} (patience {args.pt_patience}, batch "
            f"{args.pt_batch_size}) on all training behaviour, DGenCTR pretrain at most {dg_budget} "
            f"(d={args.dg_dim}, {args.dg_layers} layer). Test split; mean ± std over seeds; Δ = arm − the same "
            "backbone without pretraining, paired per seed, with its 95 % t interval; p = paired t-test, "
            "p_Holm = Holm-adjusted over every comparison of the table for that metric.\n\n"
            "Commands that filled this table (each appends its arms to the same JSONL; rows already there "
            "are skipped):\n\n"
            + "\n".join(f"    python benchmarks/ablation.py {c}"
                        for c in log_command(RESULTS / f"{args.tag}.commands", args)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0],
                   help="Label fractions f: each arm fine-tunes on this share of the training impressions.")
    p.add_argument("--label-sampling", default="impression", choices=["impression", "user"])
    p.add_argument("--backbones", nargs="*", default=["dnn", "dcnv2", "dcnv2_ta"],
                   help="GenCTR arms' backbones (none given: DGenCTR arms only).")
    p.add_argument("--negatives", nargs="+", default=["cs", "rs"])
    p.add_argument("--transfers", nargs="+", default=["none", "share", "integrate"],
                   choices=["none", "share", "integrate"], help="GenCTR arms to run (default: all).")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a ModelConfig field for every backbone arm and GenCTR pretraining (e.g. init=torch, "
                        "window_overlap=0.5, logq_correction=true, 'decoder={n_layers: 2}').")
    paper_arms = [a for a, (over, ft_model, ft_train) in DGEN_ARMS.items()
                  if "pretrain_samples" not in over and not ft_train and ft_model["transfer"] != "encoder"]
    p.add_argument("--dgenctr-arms", nargs="*", default=paper_arms, choices=list(DGEN_ARMS),
                   help="DGenCTR arms beside dgenctr_none (default: the paper's ablations; the *_behaviours / "
                        "*_both arms pretrain on the behaviour corpus; dgenctr_encoder / dgenctr_probe put a fresh "
                        "label head on the pretrained network, which fine-tunes or, for the probe, stays frozen)")
    p.add_argument("--source", default="movielens", choices=["movielens", "synthetic"])
    p.add_argument("--synthetic-events", type=int, default=2_000_000)
    p.add_argument("--synthetic-users", type=int, default=2_000)
    p.add_argument("--synthetic-items", type=int, default=5_000)
    p.add_argument("--category", default="combo", choices=["combo", "first"])
    p.add_argument("--behaviour-log", action="store_true",
                   help="MovieLens: every rating joins the clicks as a behaviour (pretraining and histories); "
                        "the labelled impressions are unchanged.")
    p.add_argument("--wrong-category-frac", type=float, default=0.0,
                   help="Give this share of the items a wrong category before the build (CS vs RS robustness).")
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--embed-dim", type=int, default=16)
    p.add_argument("--ft-epochs", type=int, default=20, help="Fine-tuning budget in passes (the same for every arm).")
    p.add_argument("--ft-max-steps", type=int, default=0, help="Fine-tuning budget in steps (> 0: replaces epochs).")
    p.add_argument("--ft-patience", type=int, default=2, help="Early stopping on the valid split (0 = off).")
    p.add_argument("--ft-metric", default="logloss", choices=["logloss", "auc"])
    p.add_argument("--transfer-lr-mult", type=float, default=1.0, help="Learning-rate factor of transferred tables.")
    p.add_argument("--transfer-freeze-steps", type=int, default=0, help="Steps the transferred tables stay frozen.")
    p.add_argument("--decoder-lr-mult", type=float, default=1.0,
                   help="Learning-rate factor of an integrated decoder's layers (0 = frozen).")
    p.add_argument("--pt-epochs", type=int, default=PT_EPOCHS)
    p.add_argument("--pt-max-steps", type=int, default=PT_MAX_STEPS, help="GenCTR pretraining steps (0: epochs).")
    p.add_argument("--pt-patience", type=int, default=PT_PATIENCE, help="Pretraining early stopping on held-out loss.")
    p.add_argument("--dg-epochs", type=int, default=2)
    p.add_argument("--dg-max-steps", type=int, default=0, help="DGenCTR pretraining steps (0: epochs).")
    p.add_argument("--dg-weight-decay", type=float, default=0.0,
                   help="Decoupled (AdamW) weight decay of DGenCTR pretraining.")
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
    p.add_argument("--pool", nargs="+", default=[], metavar="TAG",
                   help="Train nothing: write <tag>.jsonl from these tables' rows that --seeds, --fractions and "
                        "the arm options name (unchanged), then report. The tables must share every other setting "
                        "with this command and hold distinct seeds.")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.tag}.jsonl"
    ceiling_path = RESULTS / f"{args.tag}.ceiling.json"
    commands = RESULTS / f"{args.tag}.commands"
    if args.summarize_only and commands.exists():  # describe the settings the table was run with
        import shlex

        ran = p.parse_args(shlex.split(commands.read_text().splitlines()[0]))
        ran.summarize_only = True
        text = header(ran)
    else:
        text = header(args)
    if args.pool:
        pool(p, args, out)
    elif not args.summarize_only:
        args.work.mkdir(parents=True, exist_ok=True)
        build, events = build_once(args)
        top = ceiling(build, events)
        if top is not None:
            ceiling_path.write_text(json.dumps(top) + "\n")
        data = FeatureData(str(build), args.max_seq_len)
        for seed in args.seeds:
            done = done_keys(out)
            if args.backbones:
                run_genctr_arms(data, args, seed, out, done)
            if args.dgenctr_arms:  # none given: GenCTR arms only
                run_dgenctr_arms(data, args, seed, out, done)
    top = json.loads(ceiling_path.read_text()) if ceiling_path.exists() else None
    summarize(out, RESULTS / f"{args.tag}.md", RESULTS / f"{args.tag}.png", text, ceiling=top)
    print((RESULTS / f"{args.tag}.md").read_text())


if __name__ == "__main__":
    main()
