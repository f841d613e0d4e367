"""Lifelong sequences: full vs sub-quadratic attention at L in {200, 500, 1000, 2000}.

    python benchmarks/long_sequences.py --quick                 # ~2 min on 2 shared cores (build cached)
    python benchmarks/long_sequences.py                         # every L, 5 seeds (hours on CPU)
    python benchmarks/long_sequences.py --parts cost serving --lengths 2000 --md /tmp/x.md

Two arms, both dcnv2_ta + GenCTR model integration (the model that uses both options):
``full`` = ``decoder.attention=full`` + ``attention=full``; ``sub`` = ``decoder.attention=window``
(``--window``) + ``attention=sim`` (``--top-k``). Three parts:

* ``cost``: training steps on synthetic batches (MovieLens-sized vocabularies, every history
  full at L: the worst case, no padding to skip), through the library's objectives and fused
  Adam, on ``--threads`` torch threads (default 1). Pretraining: GenCTR's next-item loss on
  ``--cost-pt-positions`` // L sequences of L a step (one position budget at every L);
  fine-tuning: ``--cost-batch-size`` impressions with L-long histories. samples/s (positions/s
  for pretraining) from the median step's wall time and, steadier on a shared machine, from its
  process CPU time; peak memory of the steps, measured in a fresh process per row: CPU,
  ru_maxrss minus the RSS before the first step; CUDA, max_memory_allocated.
* ``serving``: p50/p99 latency of one request of 100 candidates of one user whose history of L
  raw ids comes in the request, through ``CTRPredictor.score`` in-process (v1 parse ->
  BatchAssembler -> Forward; no HTTP, no Feast), torch on 1 thread as the server runs it; wall
  and CPU (thread) time, the latter steadier on a shared machine. Untrained weights (latency
  does not depend on them), the MovieLens build's vocabularies.
* ``auc``: MovieLens (one feature build at L = 2000 serves every L: FeatureData keeps the last L;
  users have up to ~1,200 behaviours there), per seed: GenCTR pretraining (``--pt-batch-size``
  windows a step, at most ``--pt-steps``) then fine-tuning (``--batch-size``, early stopping on
  valid LogLoss); test AUC / LogLoss / gAUC, mean +- std over seeds, paired differences against
  the full arm at L = 200 (same seeds). Full attention at L = 2000 pretrains on [64, 2, 2000,
  2000] attention scores: several GB of memory on CPU.

Targets checked in the summary: at L = 2000 the sub arm trains at >= 1/4 of its L = 200 speed
(fine-tuning samples/s; pretraining positions/s), serves 100 candidates at p99 <= 20 ms, and its
AUC is not below the full arm's at L = 200. Writes ``benchmarks/results/long_sequences.json``
(atomically); ``--md PATH`` also writes the summary as Markdown.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from genctr.models.config import ModelConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LENGTHS = (200, 500, 1000, 2000)
ARMS = ("full", "sub")
N_CANDIDATES = 100
VOCAB = {"user": 700, "item": 9_800, "category": 1_000}  # MovieLens latest-small-sized tables
MODEL_ARGS = ("window", "top_k", "cost_batch_size", "cost_pt_positions")  # what a cost process needs
log = logging.getLogger("long_sequences")


def model_config(arm: str, L: int, vocab: dict[str, int], args: argparse.Namespace) -> ModelConfig:
    """dcnv2_ta + integrate with both attention options of ``arm``."""
    from genctr.models.config import DecoderConfig, ModelConfig

    sub = arm == "sub"
    return ModelConfig(backbone="dcnv2_ta", transfer="integrate", max_seq_len=L, embed_dim=16,
                       attention="sim" if sub else "full", sim_top_k=args.top_k,
                       decoder=DecoderConfig(attention="window" if sub else "full", window=args.window),
                       ).with_vocab(vocab["user"], vocab["item"], vocab["category"])


# -- cost: one fresh process per row ------------------------------------------------------------

def synthetic_batch(phase: str, B: int, L: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(2, VOCAB["item"], (B, L), generator=g)
    cate = torch.randint(2, VOCAB["category"], (B, L), generator=g)
    full = torch.full((B,), L)
    if phase == "pretrain":
        batch = {"seq_item": item, "seq_cate": cate, "seq_len": full}
    else:
        batch = {"user": torch.randint(2, VOCAB["user"], (B,), generator=g),
                 "item": torch.randint(2, VOCAB["item"], (B,), generator=g),
                 "cate": torch.randint(2, VOCAB["category"], (B,), generator=g), "price": torch.rand(B, generator=g),
                 "label": torch.randint(0, 2, (B,), generator=g).float(),
                 "hist_item": item, "hist_cate": cate, "hist_len": full}
    return {k: v.to(device) for k, v in batch.items()}


def measure_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec['steps']`` steps of one (phase, L, arm) and report speed and peak memory (child process)."""
    import psutil

    from genctr.models import GenCTR, build_ctr_model
    from genctr.training.config import TrainConfig
    from genctr.training.loop import make_optimizer
    from genctr.training.run import ctr_objective, genctr_objective

    torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    phase, L, arm, device = spec["phase"], spec["L"], spec["arm"], spec["device"]
    torch.manual_seed(0)
    cfg = model_config(arm, L, VOCAB, args)
    item_cate = torch.randint(2, VOCAB["category"], (VOCAB["item"],))
    decoder = GenCTR(cfg, item_cate)
    model = (decoder if phase == "pretrain" else build_ctr_model(cfg, decoder)).to(device).train()
    objective = genctr_objective if phase == "pretrain" else ctr_objective
    B = max(1, args.cost_pt_positions // L) if phase == "pretrain" else args.cost_batch_size
    opt = make_optimizer(model, TrainConfig(lr=1e-3))
    batches = [synthetic_batch(phase, B, L, device, s) for s in range(2)]
    gen = torch.Generator(device=device).manual_seed(0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = psutil.Process().memory_info().rss
    wall, cpu = [], []
    for step in range(spec["steps"] + 1):  # step 0: warm-up, not timed
        t0, c0 = time.perf_counter(), time.process_time()
        loss = objective(model, batches[step % 2], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    step_s, cpu_s = statistics.median(wall[1:]), statistics.median(cpu[1:])
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0)
    row = {"phase": phase, "L": L, "arm": arm, "batch": B, "step_s": round(step_s, 4), "cpu_step_s": round(cpu_s, 4),
           "samples_per_s": round(B / step_s, 1), "cpu_samples_per_s": round(B / cpu_s, 1),
           "peak_mib": round(max(0, peak) / 2**20, 1), "loss": round(float(loss.detach()), 4)}
    if phase == "pretrain":
        row["positions_per_s"] = round(B * L / step_s)
        row["cpu_positions_per_s"] = round(B * L / cpu_s)
    return row


def run_cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    # a fork server that has imported torch and genctr once: each row's process starts in milliseconds
    # and measures only its own steps' memory (RSS growth above its RSS at the first step)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "psutil", "genctr.models", "genctr.training.loop", "genctr.training.run"])
    rows = []
    for phase in ("pretrain", "finetune"):
        for L in args.lengths:
            for arm in args.arms:
                spec = {"phase": phase, "L": L, "arm": arm, "device": args.device, "threads": args.threads,
                        "steps": args.steps, "args": {k: getattr(args, k) for k in MODEL_ARGS}}
                with ctx.Pool(1) as pool:  # a fresh process: its peak RSS growth is this row's alone
                    row = pool.apply(measure_cost, (spec,))
                log.info("cost %s", row)
                rows.append(row)
    return rows


# -- serving ------------------------------------------------------------------------------------

def serving_payload(build: Path, L: int, seed: int = 0) -> dict[str, Any]:
    """100 candidates of one user, with a request-supplied history of L raw ids (oldest first)."""
    import pandas as pd

    from genctr.features.layout import BuildLayout

    items = pd.read_parquet(BuildLayout(build).items, columns=["item_id", "category_id"])
    rng = np.random.default_rng(seed)
    hist = items.iloc[rng.integers(0, len(items), L)]
    cands = items.iloc[rng.choice(len(items), N_CANDIDATES, replace=False)]
    return {"instances": [{
        "user_id": 1,
        "candidates": [{"item_id": int(i), "category_id": int(c), "price": 1.0}
                       for i, c in zip(cands.item_id, cands.category_id, strict=True)],
        "history": {"item_seq": hist.item_id.tolist(), "cate_seq": hist.category_id.tolist()}}]}


def serving_latency(build: Path, L: int, arm: str, args: argparse.Namespace) -> dict[str, Any]:
    from genctr.training.data import FeatureData

    data = FeatureData(str(build), L)
    row = {"L": L, "arm": arm, **score_latency(data, build, L, model_config(arm, L, data.vocab_sizes, args),
                                               args.requests, args.warmup)}
    log.info("serving %s", row)
    return row


def score_latency(data: Any, build: Path, L: int, cfg: ModelConfig, requests: int, warmup: int) -> dict[str, Any]:
    """Wall and CPU (thread) time of ``CTRPredictor.score`` on 100 candidates with an L-long history,
    for an untrained model of ``cfg`` (latency does not depend on the weights), torch on 1 thread."""
    from genctr.artifacts.files import save_artifact
    from genctr.artifacts.kinds import KIND_CTR
    from genctr.models import GenCTR, build_ctr_model
    from genctr.serving.predictor import CTRPredictor
    from genctr.serving.request import Limits, parse_v1

    torch.manual_seed(0)
    model = build_ctr_model(cfg, GenCTR(cfg, data.item_categories())).eval()
    payload, limits = serving_payload(build, L), Limits(max_history=L)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server's default --torch_threads
    try:
        with tempfile.TemporaryDirectory(prefix="long-serving-") as tmp:
            save_artifact(Path(tmp) / "m", model, {"kind": KIND_CTR, "model": dataclasses.asdict(cfg)}, build, {})
            predictor = CTRPredictor("long", Path(tmp) / "m", None, limits=limits)
            predictor.load()
            wall, cpu = [], []
            for i in range(warmup + requests):
                t0, c0 = time.perf_counter(), time.thread_time()
                pctr = predictor.score(parse_v1(payload, limits))
                if i >= warmup:
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.thread_time() - c0)
            predictor.stop()
    finally:
        torch.set_num_threads(threads)
    assert pctr.shape == (N_CANDIDATES,) and np.isfinite(pctr).all()

    def ms(x: list[float], q: float) -> float:
        return round(float(np.percentile(x, q)) * 1e3, 2)

    return {"requests": len(wall), "p50_ms": ms(wall, 50), "p99_ms": ms(wall, 99),
            "cpu_p50_ms": ms(cpu, 50), "cpu_p99_ms": ms(cpu, 99)}


# -- AUC on MovieLens ----------------------------------------------------------------------------

def movielens_build(work: Path, category: str) -> Path:
    """The MovieLens build at L = max(LENGTHS), cached under ``work`` (benchmarks/ablation.py's name)."""
    from genctr.config import DataConfig, FeatureConfig
    from genctr.workflow import build_features, export_events

    build = work / f"movielens-{category}-L{max(LENGTHS)}"
    if not (build / "stats.json").exists():
        log.info("building MovieLens features at L = %d into %s (once)", max(LENGTHS), build)
        events = work / f"movielens-{category}.parquet"
        export_events(DataConfig(source="movielens", category=category), events)
        build_features(events, build, FeatureConfig(max_seq_len=max(LENGTHS)))
    return build


def auc_run(build: Path, L: int, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from genctr.evaluation.metrics import evaluate
    from genctr.training.config import TrainConfig
    from genctr.training.data import FeatureData
    from genctr.training.run import init_ctr, score, train_ctr, train_genctr

    t0 = time.perf_counter()
    data = FeatureData(str(build), L)
    cfg = model_config(arm, L, data.vocab_sizes, args)
    pt = TrainConfig(epochs=3, max_steps=args.pt_steps, patience=3, batch_size=args.pt_batch_size, seed=seed,
                     progress=False)
    pretrained, _ = train_genctr(data, cfg, pt)
    ft = TrainConfig(epochs=args.ft_epochs, max_steps=args.ft_steps, patience=2, early_stop_metric="logloss",
                     batch_size=args.batch_size, seed=seed, progress=False)
    model = init_ctr(data, cfg, pretrained, seed)
    history = train_ctr(data, model, ft)
    test = data.splits["test"]
    m = evaluate(test.label.cpu().numpy(), score(model, data, "test", batch_size=1024), test.user_raw,
                 from_logits=True)
    row = {"L": L, "arm": arm, "seed": seed, **{k: round(float(m[k]), 5) for k in ("auc", "logloss", "gauc")},
           "epochs": len(history) - 1, "seconds": round(time.perf_counter() - t0, 1)}
    log.info("auc %s", row)
    return row


def auc_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy.stats import ttest_rel

    out = []
    base = {r["seed"]: r["auc"] for r in rows if r["L"] == min(LENGTHS) and r["arm"] == "full"}
    for key in sorted({(r["L"], r["arm"]) for r in rows}):
        group = [r for r in rows if (r["L"], r["arm"]) == key]
        aucs = [r["auc"] for r in group]
        cell = {"L": key[0], "arm": key[1], "seeds": len(group), "auc_mean": round(float(np.mean(aucs)), 5),
                "auc_std": round(float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0, 5)}
        paired = [(r["auc"], base[r["seed"]]) for r in group if r["seed"] in base]
        if paired and key != (min(LENGTHS), "full"):
            d = [a - b for a, b in paired]
            cell["delta_vs_full_L200"] = round(float(np.mean(d)), 5)
            if len(paired) >= 2:
                cell["p_paired"] = round(float(ttest_rel([a for a, _ in paired], [b for _, b in paired]).pvalue), 4)
        out.append(cell)
    return out


# -- report ----------------------------------------------------------------------------------------

def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The three targets the figures are compared with (None where a part was not run)."""
    def pick(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)

    out: dict[str, Any] = {}
    cost = result.get("cost", [])
    for phase, metric in (("finetune", "samples_per_s"), ("pretrain", "positions_per_s")):
        lo, hi = pick(cost, phase=phase, L=200, arm="sub"), pick(cost, phase=phase, L=2000, arm="sub")
        if lo and hi:
            ratio, cpu_ratio = hi[metric] / lo[metric], hi[f"cpu_{metric}"] / lo[f"cpu_{metric}"]
            out[f"{phase}_speed_ratio_2000_vs_200"] = {"metric": metric, "value": round(ratio, 3),
                                                       "cpu_value": round(cpu_ratio, 3), "target": ">= 0.25",
                                                       "met": ratio >= 0.25}
    serve = pick(result.get("serving", []), L=2000, arm="sub")
    if serve:
        out["serving_p99_ms_at_2000"] = {"value": serve["p99_ms"], "cpu_value": serve["cpu_p99_ms"],
                                         "target": "<= 20", "met": serve["p99_ms"] <= 20}
    summary = result.get("auc_summary", [])
    lo, hi = pick(summary, L=200, arm="full"), pick(summary, L=2000, arm="sub")
    if lo and hi:
        out["auc_sub_2000_vs_full_200"] = {"value": round(hi["auc_mean"] - lo["auc_mean"], 5), "target": ">= 0",
                                           "met": hi["auc_mean"] >= lo["auc_mean"]}
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = ["# Long sequences", "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; load average before / after: {meta['load_before']} / "
             f"{meta['load_after']}; {meta['seconds']} s.", ""]
    if result.get("cost"):
        lines += [f"## Training cost (synthetic batches, {result['meta']['settings']['threads']} torch thread(s))", "",
                  "| phase | L | arm | batch | samples/s | positions/s | CPU samples/s | CPU positions/s | peak MiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['phase']} | {r['L']} | {r['arm']} | {r['batch']} | {r['samples_per_s']} | "
                  f"{r.get('positions_per_s', '—')} | {r['cpu_samples_per_s']} | {r.get('cpu_positions_per_s', '—')} "
                  f"| {r['peak_mib']} |" for r in result["cost"]]
        lines.append("")
    if result.get("serving"):
        lines += ["## Serving 100 candidates (CTRPredictor.score in-process, 1 thread)", "",
                  "| L | arm | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['L']} | {r['arm']} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_p50_ms']} | {r['cpu_p99_ms']} |"
                  for r in result["serving"]]
        lines.append("")
    if result.get("auc_summary"):
        lines += ["## Test AUC on MovieLens", "", "| L | arm | seeds | AUC | Δ vs full L=200 | p |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['L']} | {r['arm']} | {r['seeds']} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | "
                  f"{r.get('delta_vs_full_L200', '—')} | {r.get('p_paired', '—')} |" for r in result["auc_summary"]]
        lines.append("")
    lines += ["## Targets", "", "```", json.dumps(result["targets"], indent=2), "```", ""]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """A setting as JSON holds it: paths (also in lists, e.g. ``--merge``) as strings."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="L in {200, 2000}, short runs, one seed (~2 min)")
    p.add_argument("--parts", nargs="+", default=["cost", "serving", "auc"], choices=["cost", "serving", "auc"])
    p.add_argument("--lengths", type=int, nargs="+", default=None, help=f"default {LENGTHS} ({{200, 2000}} quick)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0..4 (0 quick)")
    p.add_argument("--window", type=int, default=64, help="decoder.window of the sub arm")
    p.add_argument("--top-k", type=int, default=64, help="sim_top_k of the sub arm")
    p.add_argument("--batch-size", type=int, default=256, help="fine-tuning impressions per step")
    p.add_argument("--pt-positions", type=int, default=12_800,
                   help="pretraining positions per step of the cost rows when --cost-pt-positions is not given")
    p.add_argument("--pt-batch-size", type=int, default=64,
                   help="AUC part: pretraining windows per step at every L (benchmarks/ablation.py's 64; the "
                        "windowed decoder computes only the columns a batch uses)")
    p.add_argument("--cost-batch-size", type=int, default=None,
                   help="fine-tuning batch of the cost rows (default --batch-size; 64 quick)")
    p.add_argument("--cost-pt-positions", type=int, default=None,
                   help="pretraining positions a step of the cost rows (default --pt-positions; 6400 quick)")
    p.add_argument("--steps", type=int, default=None, help="timed cost steps per row (default 8; 2 quick)")
    p.add_argument("--requests", type=int, default=None, help="timed serving requests (default 300; 30 quick)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--pt-steps", type=int, default=None, help="pretraining step budget (default 600; 10 quick)")
    p.add_argument("--ft-steps", type=int, default=None, help="fine-tuning step budget, 0 = epochs (25 quick)")
    p.add_argument("--ft-epochs", type=int, default=20, help="fine-tuning passes when --ft-steps is 0")
    p.add_argument("--category", default="combo", choices=["combo", "first"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--auc-cells", nargs="+", default=None, metavar="L:ARM",
                   help="the (L, arm) cells of the AUC part, e.g. 200:full 2000:sub (default: every L x arm; "
                        "quick: those two)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the cost rows (1: CPU time per step is steady on a shared machine)")
    p.add_argument("--work", type=Path, default=HERE / "data", help="where the MovieLens build is cached")
    p.add_argument("--out", type=Path, default=RESULTS / "long_sequences.json")
    p.add_argument("--md", type=Path, default=None, help="also write the summary as Markdown here")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON[@L:ARM,...]",
                   help="run nothing: one AUC table (summary and targets) from these runs' AUC rows, unchanged "
                        "(JSON@200:full takes only that cell of a run); they must share the training settings, "
                        "and the sub arm its window and top-K")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"lengths": [200, 2000] if q else list(LENGTHS), "seeds": [0] if q else [0, 1, 2, 3, 4],
                "steps": 2 if q else 8, "requests": 30 if q else 300, "pt_steps": 10 if q else 600,
                "ft_steps": 25 if q else 0, "cost_batch_size": 64 if q else args.batch_size,
                "cost_pt_positions": 6_400 if q else args.pt_positions}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.auc_cells:  # checked here, before hours of the other parts run
        cells = [(L, arm) for L, _, arm in (c.partition(":") for c in args.auc_cells)]
        for cell, (L, arm) in zip(args.auc_cells, cells, strict=True):
            if not L.isdigit() or arm not in ARMS:
                p.error(f"--auc-cells: {cell!r} is not L:ARM with ARM one of {', '.join(ARMS)}")
        args.auc_cells = [(int(L), arm) for L, arm in cells]
    return args


# Settings every AUC run of a merged table must share (``--merge``), and those only the sub arm's runs read.
AUC_SETTINGS = ("category", "pt_steps", "ft_steps", "ft_epochs", "batch_size", "pt_batch_size", "device", "quick")
SUB_SETTINGS = ("window", "top_k")


def merge_auc(specs: list[str]) -> dict[str, Any]:
    """One AUC table from the ``auc`` rows of earlier runs' JSON (``--merge``), rows unchanged.

    A spec is a path, or ``path@L:ARM[,L:ARM...]`` to take only those cells of that run (e.g. full
    attention's rows of a run whose sub arm had other settings).

    Refuses runs whose shared settings (``AUC_SETTINGS``) differ, sub-arm rows run with another window
    or top-K (``SUB_SETTINGS``; full-attention rows do not read them), and an (L, arm, seed) two runs hold.
    """
    rows: dict[tuple[int, str, int], dict[str, Any]] = {}
    shared: dict[str, Any] | None = None
    sub: dict[str, Any] | None = None
    for spec in specs:
        name, _, picked = spec.partition("@")
        path = Path(name)
        cells = {(int(L), arm) for L, _, arm in (c.partition(":") for c in picked.split(","))} if picked else None
        run = json.loads(path.read_text())
        settings = run.get("meta", {}).get("settings", {})
        if not run.get("auc"):
            raise SystemExit(f"--merge: {path} has no AUC rows")
        mine = {k: settings.get(k) for k in AUC_SETTINGS}
        if shared is not None and mine != shared:
            raise SystemExit(f"--merge: {path} was run with other settings: "
                             + ", ".join(f"{k}={mine[k]!r} (not {shared[k]!r})" for k in AUC_SETTINGS
                                         if mine[k] != shared[k]))
        shared = mine
        for r in run["auc"]:
            if cells is not None and (r["L"], r["arm"]) not in cells:
                continue
            if r["arm"] == "sub":
                knobs = {k: settings.get(k) for k in SUB_SETTINGS}
                if sub is not None and knobs != sub:
                    raise SystemExit(f"--merge: the sub arm of {path} used {knobs}, an earlier file's {sub}")
                sub = knobs
            key = (r["L"], r["arm"], r["seed"])
            if key in rows:
                raise SystemExit(f"--merge: L={key[0]} {key[1]} seed {key[2]} is in two of the files")
            rows[key] = r
    auc = [rows[k] for k in sorted(rows)]
    return {"auc": auc, "auc_summary": auc_summary(auc),
            "merged": {"from": list(specs), **(shared or {}), **(sub or {})}}


def auc_arms(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(L, arm) pairs for the AUC part: ``--auc-cells``, else quick: the two the target compares."""
    if args.auc_cells:
        return list(args.auc_cells)  # parsed and checked by parse_args
    if args.quick:
        return [(200, "full"), (max(args.lengths), "sub")]
    return [(L, arm) for L in args.lengths for arm in args.arms]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("genctr").setLevel(logging.WARNING)
    t0, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = merge_auc(args.merge) if args.merge else {}
    if args.merge:
        args.parts = []  # a merge trains nothing
    if "cost" in args.parts:
        result["cost"] = run_cost(args)
    build = movielens_build(args.work, args.category) if {"serving", "auc"} & set(args.parts) else None
    if "serving" in args.parts and build is not None:
        result["serving"] = [serving_latency(build, L, arm, args) for L in args.lengths for arm in args.arms]
    if "auc" in args.parts and build is not None:
        result["auc"] = [auc_run(build, L, arm, seed, args) for seed in args.seeds for L, arm in auc_arms(args)]
        result["auc_summary"] = auc_summary(result["auc"])
    result["meta"] = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                      "machine": machine(), "load_before": load_before,
                      "load_after": [round(x, 2) for x in os.getloadavg()],
                      "seconds": round(time.perf_counter() - t0, 1),
                      "settings": {k: _plain(v) for k, v in vars(args).items()}}
    result["targets"] = targets(result)
    from genctr.atomic import write_json, write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result, indent=2)
    text = markdown(result)
    if args.md is not None:
        write_text(args.md, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
