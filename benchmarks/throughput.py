"""Training throughput of genctr against FuxiCTR on the same synthetic Taobao-like rows.

    python benchmarks/throughput.py                       # CPU, batch 4096, every model
    python benchmarks/throughput.py --device cuda --batch-size 16384
    python benchmarks/throughput.py --models dnn fuxi_dnn --rows 200000

genctr models train through the library's own path: a feature build on disk loaded by
:class:`genctr.training.data.FeatureData` (device-resident CSR histories, batches gathered by
index) and :func:`genctr.training.loop.fit` (its optimizer, clipping, checkpoint per epoch).
FuxiCTR models train with ``BaseModel.train_epoch`` over its own npz loader (see
``throughput_fuxictr.py``). Each pair trains on the same rows for the same epochs with the
same batch size, embedding size 16, MLP [1024, 512, 256], 3 cross layers, a [64] attention
MLP, Adam 1e-3, gradient clipping 10 and fp32, and reports the AUC on the held-out test rows.

Throughput is measured two ways: ``epoch`` = training rows / wall seconds of the epoch
(loader included), and ``step`` = batch size / the median time between consecutive batches
(robust to other load on a shared machine). Ratios genctr / FuxiCTR use the step figure.
Writes ``benchmarks/results/throughput.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import throughput_data as td

HERE = Path(__file__).resolve().parent
GENCTR_CTR = ("dnn", "dcnv2", "dcnv2_ta")
PAIRS = {"dnn": "fuxi_dnn", "dcnv2": "fuxi_dcnv2", "dcnv2_ta": "fuxi_din"}
# pairs run back to back, so both sides of a ratio see the same machine load
ALL_MODELS = ("dnn", "fuxi_dnn", "dcnv2", "fuxi_dcnv2", "dcnv2_ta", "fuxi_din", "genctr_pretrain",
              "genctr_pretrain_attn0", "dgenctr_pretrain", "dgenctr_finetune")
SEQ_MODELS = {"dcnv2_ta", "fuxi_din", "dgenctr_pretrain", "dgenctr_finetune"}  # trained on the row subset
log = logging.getLogger("throughput")


class StepClock:
    """Timestamps of consecutive batches -> median step seconds (first step = warm-up, dropped)."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def tick(self) -> None:
        self.t.append(time.perf_counter())

    def median_step(self) -> float:
        d = np.diff(self.t[1:])
        return float(np.median(d)) if len(d) else float("nan")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- genctr ------------------------------------------------------------------------------

def genctr_fit(model, objective, n_rows, make_batch, args, batch_size, epochs):
    """``loop.fit`` with a clock on the batch maker; returns (history, clock)."""
    from genctr.training.config import TrainConfig
    from genctr.training.loop import fit

    clock = StepClock()

    def timed(idx):
        clock.tick()
        return make_batch(idx)

    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, grad_clip=10.0, seed=args.seed,
                       device=args.device, amp=args.amp, compile=args.compile, progress=False)
    with tempfile.TemporaryDirectory(prefix="tp-ckpt-") as ckpt:
        history = fit(model, objective, n_rows, timed, tcfg, ckpt)
    return history, clock


def ctr_config(backbone: str, data, L: int):
    from genctr.models.config import ModelConfig

    v = data.vocab_sizes
    return ModelConfig(backbone=backbone, embed_dim=16, mlp_dims=(1024, 512, 256), cross_layers=3,
                       attention_dims=(64,), dropout=0.0, n_users=v["user"], n_items=v["item"],
                       n_cates=v["category"], max_seq_len=L)


def test_auc(model, data) -> float:
    from genctr.training.run import score

    return float(roc_auc_score(data.splits["test"].label.cpu().numpy(), score(model, data, "test")))


def run_genctr_ctr(backbone: str, data, args) -> dict:
    from genctr.models.transfer import build_ctr_model
    from genctr.training.run import ctr_objective

    torch.manual_seed(args.seed)
    model = build_ctr_model(ctr_config(backbone, data, args.seq_len)).to(data.device)
    s = data.splits["train"]
    hist, clock = genctr_fit(model, ctr_objective, len(s), lambda idx: data.batch(s, idx), args,
                             args.batch_size, args.epochs)
    return result(len(s), args.epochs, sum(h["seconds"] for h in hist), clock, args.batch_size,
                  {"test_auc": test_auc(model, data)})


def run_genctr_pretrain(data, args, attn_dropout: float | None) -> dict:
    """Next-item pretraining at L = data.max_seq_len, d_model 64, K CS negatives; the decoder's
    default dropout 0.1, on the attention weights too unless ``attn_dropout`` is given."""
    from genctr.models.config import ModelConfig
    from genctr.models.genctr import GenCTR
    from genctr.training.run import genctr_objective, with_vocab

    dec: dict = {"d_model": 64}
    if attn_dropout is not None:
        dec["attn_dropout"] = attn_dropout
    cfg = with_vocab(ModelConfig(embed_dim=16, n_negatives=args.negatives, negatives="cs", decoder=dec), data)
    torch.manual_seed(args.seed)
    model = GenCTR(cfg, item_cate=data.item_categories()).to(data.device)
    ends, lengths = data.pretrain_windows()
    g = torch.Generator().manual_seed(args.seed)
    keep = torch.randperm(len(ends), generator=g)[: args.pretrain_windows].to(ends.device)
    ends, lengths = ends[keep], lengths[keep]
    hist, clock = genctr_fit(model, genctr_objective, len(ends),
                             lambda idx: data.sequence_batch(ends[idx], lengths[idx]), args,
                             args.pretrain_batch_size, 1)
    positions = int(lengths.sum())
    out = result(len(ends), 1, hist[0]["seconds"], clock, args.pretrain_batch_size,
                 next_item_metrics(model, data, args))
    out["positions_per_s"] = positions / hist[0]["seconds"]
    out["mean_len"] = positions / len(ends)
    out["unit"] = "sequences"
    return out


@torch.no_grad()
def next_item_metrics(model, data, args) -> dict:
    """Held-out users' sequences: sampled-softmax loss and the share of the K CS negatives
    scored below the true next item (a per-position AUC), in eval mode."""
    from genctr.models.losses import sampled_softmax_loss

    users = td.heldout_user_blocks(Path(args.build_dir))
    n = torch.as_tensor(data.hist_lengths[users], device=data.device)
    ends = torch.as_tensor(data._user_start[users], device=data.device) + n
    lengths = n.clamp(max=data.max_seq_len)
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(123)
    losses, wins, count = [], 0.0, 0
    for s in range(0, len(ends), 256):
        batch = data.sequence_batch(ends[s:s + 256], lengths[s:s + 256])
        logits, valid = model.pretrain_logits(batch, gen)
        losses.append(float(sampled_softmax_loss(logits, valid)) * int(valid.sum()))
        lv = logits[valid]
        neg = lv[:, 1:]
        real = torch.isfinite(neg)
        wins += float(((neg < lv[:, :1]) & real).sum(1).div(real.sum(1).clamp_min(1)).sum())
        count += int(valid.sum())
    model.train()
    return {"heldout_loss": sum(losses) / max(count, 1), "next_item_auc": wins / max(count, 1)}


def run_dgenctr(data, args, finetune: bool, state: dict) -> dict:
    """DGenCTR masked-diffusion pretraining, or fine-tuning with full transfer from it (from an
    untrained network when pretraining was not run: the step costs the same)."""
    from genctr.models.dgenctr_config import DGenCTRConfig
    from genctr.training.run import ctr_objective
    from genctr.training.run_dgenctr import build_dgenctr, dgenctr_objective, init_dgenctr_ctr

    cfg = DGenCTRConfig()
    s = data.splits["train"]
    if not finetune:
        torch.manual_seed(args.seed)
        pre = state["dgenctr"] = build_dgenctr(cfg, data)
        hist, clock = genctr_fit(pre, dgenctr_objective, len(s), lambda idx: data.batch(s, idx), args,
                                 args.dgenctr_batch_size, args.epochs)
        return result(len(s), args.epochs, sum(h["seconds"] for h in hist), clock, args.dgenctr_batch_size,
                      {"test_auc_zero_shot": test_auc(pre, data)})
    model = init_dgenctr_ctr(data, cfg, state.get("dgenctr"), args.seed)
    hist, clock = genctr_fit(model, ctr_objective, len(s), lambda idx: data.batch(s, idx), args,
                             args.batch_size, args.epochs)
    return result(len(s), args.epochs, sum(h["seconds"] for h in hist), clock, args.batch_size,
                  {"test_auc": test_auc(model, data), "pretrained": "dgenctr" in state})


def result(rows: int, epochs: int, seconds: float, clock: StepClock, batch: int, metrics: dict) -> dict:
    step = clock.median_step()
    return {"rows": rows, "epochs": epochs, "batch_size": batch, "seconds": round(seconds, 2),
            "samples_per_s_epoch": rows * epochs / seconds, "samples_per_s_step": batch / step,
            "steps": len(clock.t), **metrics}


# -- FuxiCTR -----------------------------------------------------------------------------

def run_fuxi(name: str, npz_dir: Path, world, args) -> dict:
    import throughput_fuxictr as fx

    out = fx.run(name.removeprefix("fuxi_"), npz_dir, (world.n_users, world.n_items, world.n_cates),
                 args.seq_len, args.batch_size, args.device, args.workers, epochs=args.epochs, seed=args.seed)
    return out


# -- orchestration -----------------------------------------------------------------------

def main() -> None:
    a = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)  # FuxiCTR's run lowers the root logger to WARNING
    for noisy in ("genctr", "ray", "fuxictr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="genctr-throughput-"))
    world = td.make_world(a.rows, seed=a.seed, n_users=a.users, n_items=a.items, n_cates=a.cates, seq_len=a.seq_len)
    sub = np.arange(min(a.seq_rows, a.rows))  # rows are i.i.d.: the first seq_rows are a random subset
    gt = {"full": truth_auc(world, None), "subset": truth_auc(world, sub)}
    log.info("world: %d rows (%d behaviours), ground-truth test AUC %.4f (subset %.4f)",
             world.rows, len(world.beh_item), gt["full"], gt["subset"])
    results: dict[str, dict] = {}
    datasets: dict[str, object] = {}
    state: dict[str, object] = {}

    def genctr_data(kind: str):
        from genctr.training.data import FeatureData

        if kind not in datasets:
            rows = None if kind in ("full", "pretrain") else sub
            root = work / ("genctr_" + ("subset" if rows is not None else "full"))
            if not (root / "stats.json").exists():
                td.write_genctr_build(subset(world, rows), root, max_seq_len=200)
            a.build_dir = str(root)
            L = 200 if kind == "pretrain" else a.seq_len
            datasets[kind] = FeatureData(str(root), L, a.device)
        return datasets[kind]

    for rep in range(a.repeats):  # the whole list again: pairs alternate, each model keeps its best run
        for name in a.models:
            if rep and name.startswith(("genctr_pretrain", "dgenctr")):
                continue  # repeats are for the genctr/FuxiCTR ratios
            seq = name in SEQ_MODELS
            log.info("== %s (%s rows, run %d) load %s", name, "subset" if seq else "all", rep + 1, load_avg())
            before = load_avg()
            if name.startswith("fuxi_"):
                npz = work / ("fuxi_subset" if seq else "fuxi_full")
                if not (npz / "train.npz").exists():
                    td.write_fuxictr_npz(world, npz, a.seq_len, sub if seq else None)
                r = run_fuxi(name, npz, world, a)
            elif name.startswith("genctr_pretrain"):
                r = run_genctr_pretrain(genctr_data("pretrain"), a, 0.0 if name.endswith("attn0") else None)
            elif name.startswith("dgenctr"):
                r = run_dgenctr(genctr_data("subset"), a, finetune=name.endswith("finetune"), state=state)
            else:
                r = run_genctr_ctr(name, genctr_data("subset" if seq else "full"), a)
            r.update({"subset": seq, "load_before": before, "load_after": load_avg()})
            log.info("   %s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
            runs = results.get(name, {}).get("step_runs", []) + [round(r["samples_per_s_step"], 1)]
            if name not in results or r["samples_per_s_step"] > results[name]["samples_per_s_step"]:
                results[name] = r
            results[name]["step_runs"] = runs
    for g, f in PAIRS.items():
        if g in results and f in results:
            for k in ("step", "epoch"):
                results[g][f"ratio_vs_fuxictr_{k}"] = (results[g][f"samples_per_s_{k}"]
                                                       / results[f][f"samples_per_s_{k}"])
    report = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": machine(),
              "settings": {k: v for k, v in vars(a).items() if k != "build_dir"},
              "ground_truth_test_auc": gt, "results": results,
              "wall_seconds": round(time.perf_counter() - t_all, 1)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"\nwrote {out} ({report['wall_seconds']} s)")


def subset(world: td.World, rows: np.ndarray | None) -> td.World:
    if rows is None:
        return world
    import dataclasses

    per_row = {f: getattr(world, f)[rows] for f in ("user", "item", "cate", "price", "hist_end", "label",
                                                     "true_p", "split")}
    return dataclasses.replace(world, **per_row)


def truth_auc(world: td.World, rows: np.ndarray | None) -> float:
    test = world.split == 2
    if rows is not None:
        test &= np.isin(np.arange(world.rows), rows)
    return float(roc_auc_score(world.label[test], world.true_p[test]))


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table(report: dict) -> str:
    rows = ["| model | rows (train) | samples/s epoch | samples/s step | genctr/FuxiCTR (step) | quality |",
            "|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        q = ", ".join(f"{k} {r[k]:.4f}" for k in ("test_auc", "test_auc_zero_shot", "next_item_auc", "heldout_loss")
                      if k in r)
        ratio = f"{r['ratio_vs_fuxictr_step']:.2f}x" if "ratio_vs_fuxictr_step" in r else ""
        extra = f" ({r['positions_per_s']:,.0f} positions/s)" if "positions_per_s" in r else ""
        rows.append(f"| {name} | {r['rows']:,}{' (subset)' if r['subset'] else ''} | {r['samples_per_s_epoch']:,.0f}"
                    f"{extra} | {r['samples_per_s_step']:,.0f} | {ratio} | {q} |")
    gt = report["ground_truth_test_auc"]
    rows.append(f"\nground-truth click model test AUC: {gt['full']:.4f} (all rows), {gt['subset']:.4f} (subset)")
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--rows", type=int, default=300_000, help="impressions generated (80%% train)")
    p.add_argument("--seq-rows", type=int, default=100_000,
                   help="row subset for the slow sequence models (DCNv2_TA, FuxiCTR DIN, DGenCTR)")
    p.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1,
                   help="run the CTR models this many times, alternating pairs; each keeps its best run")
    p.add_argument("--seq-len", type=int, default=50, help="CTR history length")
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--cates", type=int, default=500)
    p.add_argument("--pretrain-batch-size", type=int, default=256, help="GenCTR sequences per batch")
    p.add_argument("--pretrain-windows", type=int, default=4096, help="GenCTR windows trained (random subset)")
    p.add_argument("--negatives", type=int, default=20, help="GenCTR CS negatives per position")
    p.add_argument("--dgenctr-batch-size", type=int, default=1024, help="DGenCTR pretraining (in-batch negatives)")
    p.add_argument("--workers", type=int, default=1, help="FuxiCTR loader workers")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the genctr models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="where the generated data goes (default: a temp dir)")
    p.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    return p.parse_args()


if __name__ == "__main__":
    main()
