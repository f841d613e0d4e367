"""Every GPU check in one run and one JSON file (``benchmarks/gpu_suite.sh OUT.json`` calls this).

    benchmarks/gpu_suite.sh results/gpu_suite.json                 # one GPU node, <= 8 minutes
    benchmarks/gpu_suite.sh /tmp/suite.json --device cpu --quick   # tiny sizes, on a CPU, < 1 minute

Checks, in order (each records ``status``: ok | skipped (with a ``reason``) | error; a failing
check does not stop the others, and the JSON is rewritten atomically after each one, so a run cut
short still leaves every finished check on disk):

* ``throughput``: genctr DNN, DCN V2 and DCN V2 & TA against FuxiCTR's DNN, DCNv2 and DIN at
  batch 4096 and 16384, through ``throughput.py``'s harness (same rows, same settings, median
  step time); FuxiCTR's side is ``skipped`` when the ``fuxictr`` package is not installed;
* ``genctr_pretrain``: GenCTR next-item pretraining sequences/s (and positions/s) at L = 200,
  d_model = 64, K = 20 category-conditioned negatives;
* ``bf16``: DCN V2 & TA with and without bf16 autocast (``TrainConfig.amp``; CUDA only: on a
  CPU both runs are fp32 and ``bf16_active`` says so);
* ``fused_optimizer``: which Adam ``make_optimizer`` builds, its step time against the foreach
  implementation on the same parameters, and that both reach the same weights;
* ``ddp``: ``genctr train finetune`` under ``torchrun --nproc-per-node N`` (N = the visible GPUs;
  2 gloo processes on a CPU) against the same run in one process: rows/s of each and the largest
  weight difference (the two should agree to float rounding).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import throughput as tp
import throughput_data as td

log = logging.getLogger("gpu_suite")
CTR_PAIRS = (("dnn", "fuxi_dnn"), ("dcnv2", "fuxi_dcnv2"), ("dcnv2_ta", "fuxi_din"))
PRETRAIN_L, PRETRAIN_D = 200, 64  # the paper's history length; GenCTR's decoder width


@dataclass(frozen=True)
class Sizes:
    """How much work each check does (``FULL`` fits one GPU node in ~5 min, ``QUICK`` a CPU in seconds)."""

    rows: int  # impressions generated (80 % train)
    seq_rows: int  # row subset the sequence models (DCN V2 & TA, DIN) train on
    users: int
    items: int
    cates: int
    seq_len: int  # CTR history length
    batches: tuple[int, ...]  # CTR throughput batch sizes
    pretrain_windows: int  # GenCTR windows trained (random subset)
    pretrain_batch: int  # GenCTR sequences per batch
    bf16_batch: int
    ddp_batch: int  # global batch of the DDP run (divisible by any GPU count up to 8)
    optimizer_steps: int  # timed optimizer steps per implementation


FULL = Sizes(rows=1_000_000, seq_rows=200_000, users=20_000, items=50_000, cates=500, seq_len=50,
             batches=(4096, 16384), pretrain_windows=16_384, pretrain_batch=256, bf16_batch=4096,
             ddp_batch=16_384, optimizer_steps=50)
# every timed run takes >= 4 steps: the harness's step figure is the median gap after the first
QUICK = Sizes(rows=1500, seq_rows=1000, users=100, items=300, cates=20, seq_len=20, batches=(64, 256),
              pretrain_windows=64, pretrain_batch=16, bf16_batch=128, ddp_batch=128, optimizer_steps=5)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- data -------------------------------------------------------------------------------

class Data:
    """The generated world and the builds every check reads, made once (``throughput.py``'s formats)."""

    def __init__(self, sizes: Sizes, device: str, work: Path, seed: int) -> None:
        self.sizes, self.device, self.work = sizes, device, work
        self.world = td.make_world(sizes.rows, seed=seed, n_users=sizes.users, n_items=sizes.items,
                                   n_cates=sizes.cates, seq_len=sizes.seq_len)
        self.sub = np.arange(min(sizes.seq_rows, sizes.rows))  # rows are i.i.d.: a prefix is a random subset
        self._builds: dict[str, Path] = {}
        self._data: dict[tuple[str, int], Any] = {}

    def build(self, kind: str) -> Path:
        """``full`` | ``subset``: a feature build with histories of up to L = 200."""
        if kind not in self._builds:
            rows = {"full": None, "subset": self.sub}[kind]
            root = td.write_genctr_build(tp.subset(self.world, rows), self.work / f"build_{kind}", max_seq_len=200)
            write_identity_vocab(root, self.world)
            self._builds[kind] = root
        return self._builds[kind]

    def features(self, kind: str, L: int) -> Any:
        from genctr.training.data import FeatureData

        if (kind, L) not in self._data:
            self._data[kind, L] = FeatureData(str(self.build(kind)), L, self.device)
        return self._data[kind, L]

    def fuxi_npz(self, subset: bool) -> Path:
        npz = self.work / ("fuxi_subset" if subset else "fuxi_full")
        if not (npz / "train.npz").exists():
            td.write_fuxictr_npz(self.world, npz, self.sizes.seq_len, self.sub if subset else None)
        return npz


def write_identity_vocab(root: Path, world: td.World) -> None:
    """``vocab/{user,item,category}``: raw id = index (what an artifact copies from its build)."""
    for name, size in (("user", world.n_users), ("item", world.n_items), ("category", world.n_cates)):
        d = root / "vocab" / name
        d.mkdir(parents=True, exist_ok=True)
        idx = np.arange(td.FIRST, size, dtype=np.int64)
        pd.DataFrame({"raw_id": idx, "idx": idx.astype(np.int32)}).to_parquet(d / "part-00000.parquet")


def harness_args(a: argparse.Namespace, sizes: Sizes, batch: int, amp: bool = True) -> argparse.Namespace:
    """The namespace ``throughput.py``'s run functions read."""
    return argparse.Namespace(device=a.device, batch_size=batch, seq_len=sizes.seq_len, epochs=1, seed=a.seed,
                              amp=amp, compile=False, workers=1, negatives=20,
                              pretrain_batch_size=sizes.pretrain_batch, pretrain_windows=sizes.pretrain_windows,
                              build_dir=None)


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The harness's result with floats rounded, marked ok."""
    return {"status": "ok", **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}}


# -- checks -----------------------------------------------------------------------------

def check_throughput(d: Data, a: argparse.Namespace) -> dict[str, Any]:
    fuxi_missing = importlib.util.find_spec("fuxictr") is None
    out: dict[str, Any] = {"status": "ok", "fuxictr_installed": not fuxi_missing, "batches": {}}
    for batch in d.sizes.batches:
        args = harness_args(a, d.sizes, batch)
        runs: dict[str, Any] = {}
        for ours, theirs in CTR_PAIRS:
            seq = ours == "dcnv2_ta"  # the sequence models train on the row subset, as in throughput.py
            runs[ours] = figures(tp.run_genctr_ctr(ours, d.features("subset" if seq else "full", d.sizes.seq_len),
                                                   args))
            if fuxi_missing:
                runs[theirs] = {"status": "skipped", "reason": "the fuxictr package is not installed "
                                                               "(pip install fuxictr)"}
                continue
            try:
                runs[theirs] = figures(tp.run_fuxi(theirs, d.fuxi_npz(seq), d.world, args))
            except ImportError as exc:  # installed but a part of it fails to import
                runs[theirs] = {"status": "skipped", "reason": f"fuxictr does not import: {exc}"}
                continue
            runs[ours]["ratio_vs_fuxictr_step"] = round(runs[ours]["samples_per_s_step"]
                                                        / runs[theirs]["samples_per_s_step"], 3)
        out["batches"][str(batch)] = runs
    return out


def check_pretrain(d: Data, a: argparse.Namespace) -> dict[str, Any]:
    args = harness_args(a, d.sizes, d.sizes.pretrain_batch)
    args.build_dir = str(d.build("full"))  # the held-out users' sequences for next_item_metrics
    data = d.features("full", PRETRAIN_L)
    r = tp.run_genctr_pretrain(data, args, attn_dropout=None)
    return {**figures(r), "seq_len": PRETRAIN_L, "d_model": PRETRAIN_D, "negatives": args.negatives,
            "amp": a.device == "cuda", "sequences_per_s": round(r["samples_per_s_step"], 1)}


def check_bf16(d: Data, a: argparse.Namespace) -> dict[str, Any]:
    data = d.features("subset", d.sizes.seq_len)
    runs = {name: figures(tp.run_genctr_ctr("dcnv2_ta", data, harness_args(a, d.sizes, d.sizes.bf16_batch, amp)))
            for name, amp in (("bf16", True), ("fp32", False))}
    return {"status": "ok", "model": "dcnv2_ta", "batch_size": d.sizes.bf16_batch,
            "bf16_active": a.device == "cuda",  # TrainConfig.amp: bf16 autocast on CUDA only
            # on a CPU both runs are fp32: their ratio would be noise, not a figure
            "speedup_step": round(runs["bf16"]["samples_per_s_step"] / runs["fp32"]["samples_per_s_step"], 3)
            if a.device == "cuda" else None,
            "test_auc_difference": round(runs["bf16"]["test_auc"] - runs["fp32"]["test_auc"], 4), **runs}


def check_fused_optimizer(d: Data, a: argparse.Namespace) -> dict[str, Any]:
    from genctr.models.transfer import build_ctr_model
    from genctr.training.config import TrainConfig
    from genctr.training.loop import make_optimizer

    data = d.features("subset", d.sizes.seq_len)
    torch.manual_seed(a.seed)
    base = build_ctr_model(tp.ctr_config("dcnv2_ta", data, d.sizes.seq_len)).to(data.device)
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]  # the same gradients for both
    models, times, fused = {}, {}, False
    for impl in ("fused", "foreach"):
        model = build_ctr_model(tp.ctr_config("dcnv2_ta", data, d.sizes.seq_len)).to(data.device)
        model.load_state_dict(base.state_dict())
        cfg = TrainConfig(device=a.device, progress=False)
        if impl == "fused":
            opt = make_optimizer(model, cfg)
            fused = bool(opt.defaults.get("fused"))
        else:
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=True)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        step_s = []
        for _ in range(d.sizes.optimizer_steps + 1):  # the first step allocates the moments: not timed
            sync(a.device)
            t0 = time.perf_counter()
            opt.step()
            sync(a.device)
            step_s.append(time.perf_counter() - t0)
        models[impl], times[impl] = model, float(np.median(step_s[1:]))
    with torch.no_grad():
        diff = max(float((p - q).abs().max()) for p, q in zip(models["fused"].parameters(),
                                                               models["foreach"].parameters(), strict=True))
    return {"status": "ok", "make_optimizer_fused": fused, "parameters": sum(p.numel() for p in base.parameters()),
            "steps": d.sizes.optimizer_steps, "step_ms_fused": round(times["fused"] * 1e3, 4),
            "step_ms_foreach": round(times["foreach"] * 1e3, 4),
            "speedup": round(times["foreach"] / times["fused"], 3), "max_abs_weight_diff": diff,
            "fused_matches_foreach": diff < 1e-5}


def check_ddp(d: Data, a: argparse.Namespace, budget_left: float) -> dict[str, Any]:
    from safetensors.torch import load_file

    from genctr.atomic import write_json
    from genctr.training.run import finetune

    cuda = a.device == "cuda"
    n = a.ddp_procs or (torch.cuda.device_count() if cuda else 2)
    if d.sizes.ddp_batch % n:
        return {"status": "skipped", "reason": f"global batch {d.sizes.ddp_batch} does not split over {n} processes"}
    build = d.build("full")
    # dropout 0: no random draw inside a step, so one process and N must reach the same weights
    sections = {"model": {"backbone": "dnn", "dropout": 0.0, "max_seq_len": d.sizes.seq_len},
                "train": {"epochs": 1, "batch_size": d.sizes.ddp_batch, "device": a.device, "progress": False,
                          "seed": a.seed}}
    config = write_json(d.work / "ddp_config.json", sections)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "genctr.cli", "--log-format", "json", "train", "finetune", "--build", str(build),
           "--out", str(d.work / "ddp_model"), "--config", str(config)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30.0, budget_left))
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"status": "error", "error": f"torchrun exited {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    many = json.loads(proc.stdout)
    start = re.search(r"data-parallel rank 0 of (\d+) \(local rank 0\) on (\S+), backend (\w+)", proc.stderr)
    t1 = time.perf_counter()
    one = finetune(build, d.work / "single_model", sections["model"], sections["train"])
    wall_one = time.perf_counter() - t1
    w_many, w_one = load_file(str(d.work / "ddp_model" / "model.safetensors")), \
        load_file(str(d.work / "single_model" / "model.safetensors"))
    diff = max(float((w_many[k].float() - w_one[k].float()).abs().max()) for k in w_one)
    epoch_many, epoch_one = many["history"][-1], one["history"][-1]
    return {"status": "ok", "world_size": int(start.group(1)) if start else None,
            "backend": start.group(3) if start else None, "rank0_device": start.group(2) if start else None,
            "nproc_per_node": n, "batch_size": d.sizes.ddp_batch, "rows": epoch_many["rows"],
            "steps": epoch_many["steps"], "steps_single": epoch_one["steps"],
            "rows_per_s_ddp": round(epoch_many["rows_per_s"], 1),
            "rows_per_s_single": round(epoch_one["rows_per_s"], 1),
            "speedup": round(epoch_many["rows_per_s"] / epoch_one["rows_per_s"], 3),
            "wall_s_ddp_job": round(wall, 2), "wall_s_single": round(wall_one, 2),
            "test_auc_ddp": round(many["test"]["auc"], 5), "test_auc_single": round(one["test"]["auc"], 5),
            "max_abs_weight_diff": diff, "weights_allclose": diff < 1e-4}


def machine() -> dict[str, Any]:
    """``throughput.machine()`` (it needs psutil), plus the GPUs torch sees."""
    try:
        info = tp.machine()
    except ImportError:
        import platform

        info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- orchestration ----------------------------------------------------------------------

class Report:
    """The JSON document, rewritten atomically to ``out`` after every check."""

    def __init__(self, out: Path, a: argparse.Namespace, sizes: Sizes) -> None:
        self.out, self.t0 = out, time.perf_counter()
        self.doc: dict[str, Any] = {
            "suite": "genctr gpu_suite", "command": " ".join(["gpu_suite.py", *(sys.argv[1:])]),
            "device": a.device, "quick": a.quick, "sizes": {**vars(sizes), "batches": list(sizes.batches)},
            "machine": machine(), "load_avg_start": load_avg(), "checks": {}, "complete": False}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def write(self) -> None:
        from genctr.atomic import write_json

        self.doc["wall_seconds"] = round(self.elapsed(), 1)
        write_json(self.out, self.doc, default=float)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """One check into ``checks[name]``; an exception becomes status error (the others still run)."""
        log.info("== %s (load %s)", name, load_avg())
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # one broken check must not lose the others' figures
            log.exception("%s failed", name)
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        self.doc["checks"][name] = result
        self.write()
        log.info("   %s: %s in %.1f s", name, result["status"], result["seconds"])


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("genctr", "fuxictr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if a.device == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda but torch %s sees no GPU; run with --device cpu", torch.__version__)
        return 2
    sizes = QUICK if a.quick else FULL
    report = Report(Path(a.out), a, sizes)
    with tempfile.TemporaryDirectory(prefix="genctr-gpu-suite-", dir=a.work_dir) as work:
        data = Data(sizes, a.device, Path(work), a.seed)
        checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("throughput", lambda: check_throughput(data, a)),
            ("genctr_pretrain", lambda: check_pretrain(data, a)),
            ("bf16", lambda: check_bf16(data, a)),
            ("fused_optimizer", lambda: check_fused_optimizer(data, a)),
            ("ddp", lambda: check_ddp(data, a, a.budget_s - report.elapsed())),
        ]
        for name, fn in checks:
            if report.elapsed() > a.budget_s:
                report.doc["checks"][name] = {"status": "skipped", "reason": f"the {a.budget_s:.0f} s budget was spent"}
                continue
            report.run(name, fn)
    report.doc.update(complete=True, load_avg_end=load_avg())
    report.write()
    failed = [k for k, v in report.doc["checks"].items() if v["status"] == "error"]
    log.info("wrote %s (%.1f s)%s", a.out, report.elapsed(), f"; failed: {failed}" if failed else "")
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the JSON file to write (atomically, after every check)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the whole suite in seconds (CPU smoke run)")
    p.add_argument("--ddp-procs", type=int, default=0, help="torchrun processes (default: the visible GPUs; 2 on CPU)")
    p.add_argument("--budget-s", type=float, default=450.0, help="checks not started by then are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="parent of the temporary data directory")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
