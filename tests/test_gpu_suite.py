"""``benchmarks/gpu_suite.sh --device cpu --quick``: the GPU suite's own smoke run, so it never rots.

Runs the real script (every check at tiny sizes, DDP with 2 gloo processes) and checks that the
one JSON file it writes holds every check with sane figures: throughput of each model at both
batch sizes, FuxiCTR reported as skipped (not a number) when it is not installed, GenCTR
pretraining at L = 200 / d = 64, bf16 marked inactive on a CPU, the fused optimizer agreeing
with foreach, and the DDP run agreeing with one process.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
CHECKS = ("throughput", "genctr_pretrain", "bf16", "fused_optimizer", "ddp")


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("suite") / "suite.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(["bash", str(SUITE), str(out), "--device", "cpu", "--quick", "--work-dir", str(out.parent)],
                          capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically
    return json.loads(out.read_text())


def test_every_check_ran_and_the_report_is_complete(suite: dict) -> None:
    assert suite["complete"] is True and suite["device"] == "cpu" and suite["quick"] is True
    assert list(suite["checks"]) == list(CHECKS)
    assert {c["status"] for c in suite["checks"].values()} == {"ok"}, {k: c.get("error") for k, c in
                                                                       suite["checks"].items()}
    assert len(suite["load_avg_start"]) == 3 and positive(suite["wall_seconds"])


def test_throughput_has_every_model_at_both_batch_sizes(suite: dict) -> None:
    t = suite["checks"]["throughput"]
    assert list(t["batches"]) == [str(b) for b in suite["sizes"]["batches"]] and len(t["batches"]) == 2
    fuxi = importlib.util.find_spec("fuxictr") is not None
    assert t["fuxictr_installed"] is fuxi
    for batch, runs in t["batches"].items():
        for ours, theirs in (("dnn", "fuxi_dnn"), ("dcnv2", "fuxi_dcnv2"), ("dcnv2_ta", "fuxi_din")):
            r = runs[ours]
            assert r["status"] == "ok" and r["batch_size"] == int(batch)
            assert positive(r["samples_per_s_step"]) and positive(r["samples_per_s_epoch"])
            assert r["steps"] >= 3 and 0.0 <= r["test_auc"] <= 1.0
            if fuxi:
                assert runs[theirs]["status"] == "ok" and positive(r["ratio_vs_fuxictr_step"])
            else:  # reported as skipped, never as a made-up figure
                assert runs[theirs] == {"status": "skipped", "reason": runs[theirs]["reason"]}
                assert "fuxictr" in runs[theirs]["reason"] and "ratio_vs_fuxictr_step" not in r


def test_pretraining_bf16_and_optimizer_figures_are_sane(suite: dict) -> None:
    c = suite["checks"]
    p = c["genctr_pretrain"]
    assert (p["seq_len"], p["d_model"], p["unit"]) == (200, 64, "sequences")
    assert positive(p["sequences_per_s"]) and p["positions_per_s"] > p["sequences_per_s"]  # mean length > 1
    assert math.isfinite(p["heldout_loss"]) and 0.0 <= p["next_item_auc"] <= 1.0
    b = c["bf16"]
    assert b["bf16_active"] is False and b["speedup_step"] is None  # a CPU has no bf16 path: no ratio
    assert positive(b["bf16"]["samples_per_s_step"]) and positive(b["fp32"]["samples_per_s_step"])
    o = c["fused_optimizer"]
    assert o["make_optimizer_fused"] is True and o["fused_matches_foreach"] is True
    assert positive(o["step_ms_fused"]) and positive(o["step_ms_foreach"]) and o["parameters"] > 0


def test_ddp_ran_two_gloo_ranks_that_agree_with_one_process(suite: dict) -> None:
    d = suite["checks"]["ddp"]
    assert (d["world_size"], d["backend"], d["rank0_device"]) == (2, "gloo", "cpu")
    assert d["steps"] == d["steps_single"] >= 2 and d["batch_size"] % d["world_size"] == 0
    assert d["weights_allclose"] is True and d["max_abs_weight_diff"] < 1e-4
    assert d["test_auc_ddp"] == pytest.approx(d["test_auc_single"], abs=1e-4)
    assert positive(d["rows_per_s_ddp"]) and positive(d["rows_per_s_single"])
