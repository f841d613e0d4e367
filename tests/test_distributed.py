"""Data-parallel training under a real ``torchrun`` (2 processes, gloo on CPU) on the tiny build.

One module fixture trains: GenCTR pretraining with 2 ranks, then fine-tuning (DCN V2 & TA with
model integration, the configuration that leaves parameters unused) with 2 ranks and in this
process. The 2-rank weights must equal the 1-process ones at the same global batch and seed; a
rank killed mid-run must make torchrun fail fast, and the rerun must resume from the last
checkpoint and end with the uninterrupted run's weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_build import write_tiny_build

L = 8
TORCHRUN = Path(sys.executable).with_name("torchrun")
# a one-layer decoder without dropout: fine-tuning with integration runs it in training mode, and
# dropout masks drawn on a rank's half batch could not equal one process's masks
DECODER = {"d_model": 16, "dropout": 0.0}
PRETRAIN = {"model": {"embed_dim": 8, "n_negatives": 5, "max_seq_len": L, "decoder": DECODER},
            "train": {"max_steps": 4, "batch_size": 16, "device": "cpu", "progress": False}}
# 565 training rows at batch 64: 9 steps an epoch, the last of 53 rows (26 + 27 on two ranks)
FINETUNE = {"model": {"backbone": "dcnv2_ta", "transfer": "integrate", "embed_dim": 8, "mlp_dims": [16],
                      "attention_dims": [8], "cross_layers": 1, "dropout": 0.0, "max_seq_len": L, "decoder": DECODER},
            # patience 2 cannot stop 3 epochs early, but takes the early-stopping path (decisions, restore)
            "train": {"epochs": 3, "batch_size": 64, "patience": 2, "device": "cpu", "progress": False}}
STEPS_PER_EPOCH = 9
KILL_AT_STEP = 2 * STEPS_PER_EPOCH + 3  # rank 1 dies in epoch 3, after epoch 2's checkpoint
# rank 1 SIGKILLs itself at its $KILL_AT-th training step; everything else is the unchanged CLI
DYING_WORKER = """
import os, signal
import genctr.training.run as run

KILL_AT, calls, objective = int(os.environ["KILL_AT"]), [0], run.ctr_objective

def dying(model, batch, generator):
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return objective(model, batch, generator)

run.ctr_objective = dying
from genctr.cli.main import app
app(prog_name="genctr")
"""
ATOL, RTOL = 1e-5, 1e-4  # float rounding of two half-batch gradients averaged vs one batch's (seen: 3e-8)
# The attention's key bias (the first d_model entries of kv_proj.bias) has a true gradient of exactly
# 0: it adds the same q.b to every score of a query, which the softmax cancels. What it gets is
# rounding noise, and Adam's normalised step turns noise of any size into steps of ~lr, so its
# value is not comparable between two float summation orders (nor does it change any output).
KEY_BIAS = ("decoder.blocks.0.attn.kv_proj.bias", DECODER["d_model"])


def torchrun(args: list[str], script: Path | None = None, timeout: float = 120,
             **env_vars: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2`` of the genctr CLI (or ``script``), JSON logs."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", **env_vars)  # two ranks on two cores
    target = [str(script)] if script is not None else ["-m", "genctr.cli"]
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "--monitor-interval", "0.2", *target,
           "--log-format", "json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def weights(artifact: Path) -> dict[str, torch.Tensor]:
    return load_file(str(artifact / "model.safetensors"))


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every weight allclose, the key bias (see KEY_BIAS) aside."""
    assert a.keys() == b.keys()
    name, d = KEY_BIAS
    assert a[name].shape == (2 * d,)
    for k in a:
        x, y = (a[k][d:], b[k][d:]) if k == name else (a[k], b[k])
        assert torch.allclose(x, y, atol=ATOL, rtol=RTOL), (k, float((x - y).abs().max()))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def logits_on_test(runs: dict[str, Any], name: str) -> torch.Tensor:
    """The artifact's logits on the test split (the key bias included: it changes none)."""
    from genctr.artifacts.load import load_model
    from genctr.training.data import FeatureData
    from genctr.training.run import score

    data = FeatureData(str(runs["build"]), L)
    return torch.as_tensor(score(load_model(runs["root"] / name, "cpu"), data, "test"))


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from genctr.training.run import finetune

    root = tmp_path_factory.mktemp("ddp")
    build = write_tiny_build(root / "build", L)
    pre_cfg, ft_cfg = write_config(root / "pre.yaml", PRETRAIN), write_config(root / "ft.yaml", FINETUNE)
    pre = torchrun(["train", "pretrain", "--build", str(build), "--out", str(root / "pre"), "--config", str(pre_cfg)])
    assert pre.returncode == 0, pre.stderr[-3000:]
    ddp = torchrun(["train", "finetune", "--build", str(build), "--out", str(root / "ddp"),
                    "--pretrained", str(root / "pre"), "--config", str(ft_cfg)])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = finetune(build, root / "single", FINETUNE["model"], FINETUNE["train"], root / "pre")
    return {"root": root, "build": build, "ft_cfg": ft_cfg, "pre": pre, "ddp": ddp, "single": single}


def test_pretraining_under_torchrun_takes_the_configured_steps(runs: dict[str, Any]) -> None:
    from genctr.training.run import pretrain

    out = json.loads(runs["pre"].stdout)  # rank 0 alone prints: exactly one JSON document
    # GenCTR's loss draws negatives per rank, so its weights are not one process's; its budget is
    one = pretrain(runs["build"], runs["root"] / "pre1", "genctr", PRETRAIN["model"], PRETRAIN["train"])
    assert out["diagnostics"]["steps"] == one["diagnostics"]["steps"] == PRETRAIN["train"]["max_steps"]
    # rows summed over both ranks, per epoch: every row of each global batch was trained once
    assert [r.get("rows") for r in out["history"]] == [r.get("rows") for r in one["history"]]
    assert out["history"][-1]["heldout_loss"] < out["history"][0]["heldout_loss"]
    assert all(torch.isfinite(t).all() for t in weights(runs["root"] / "pre").values())
    assert not (runs["root"] / "pre.ckpt").exists()  # rank 0 cleared its checkpoints


def test_two_ranks_end_with_the_weights_of_one_process(runs: dict[str, Any]) -> None:
    from genctr.training.run import finetune

    root = runs["root"]
    ddp, single = weights(root / "ddp"), weights(root / "single")
    assert_close(ddp, single)
    assert torch.allclose(logits_on_test(runs, "ddp"), logits_on_test(runs, "single"), atol=ATOL, rtol=RTOL)
    out = json.loads(runs["ddp"].stdout)
    assert out["diagnostics"]["steps"] == runs["single"]["diagnostics"]["steps"] == 3 * STEPS_PER_EPOCH
    assert [r["rows"] for r in out["history"][1:]] == [565] * 3  # both ranks' rows, counted once
    assert out["history"][-1]["train_loss"] == pytest.approx(runs["single"]["history"][-1]["train_loss"], rel=1e-5)
    # the tolerance is far tighter than what a wrong run changes: per-rank lr scaling (lr x 2) moves
    # the weights by orders of magnitude more
    doubled = finetune(runs["build"], root / "lr2", FINETUNE["model"], {**FINETUNE["train"], "lr": 2e-3},
                       root / "pre")
    assert doubled["diagnostics"]["steps"] == 3 * STEPS_PER_EPOCH
    assert max_diff(weights(root / "lr2"), single) > 1000 * ATOL


def test_a_killed_rank_fails_the_job_fast_and_the_rerun_resumes_to_the_same_weights(runs: dict[str, Any]) -> None:
    root = runs["root"]
    worker = root / "dying_worker.py"
    worker.write_text(DYING_WORKER)
    out, args = root / "killed", ["train", "finetune", "--build", str(runs["build"]), "--out", str(root / "killed"),
                                  "--pretrained", str(root / "pre"), "--config", str(runs["ft_cfg"])]
    t0 = time.monotonic()
    killed = subprocess_or_hang(lambda: torchrun(args, script=worker, timeout=90, KILL_AT=str(KILL_AT_STEP)))
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert "SIGKILL" in killed.stderr  # torchrun's report names the dead rank's signal: the failure is the kill
    assert time.monotonic() - t0 < 60, "torchrun took too long to notice the dead rank"
    assert not out.exists()  # no artifact from a failed job
    ckpts = sorted(p.name for p in (root / "killed.ckpt").iterdir() if p.name.startswith("epoch-"))
    assert ckpts == ["epoch-0000", "epoch-0001"]

    rerun = torchrun(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumes after epoch 2 at optimizer step {2 * STEPS_PER_EPOCH}" in rerun.stderr
    history = json.loads(rerun.stdout)["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3] and history[-1]["steps"] == 3 * STEPS_PER_EPOCH
    resumed, uninterrupted = weights(out), weights(root / "ddp")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def subprocess_or_hang(run: Any) -> subprocess.CompletedProcess:
    try:
        return run()
    except subprocess.TimeoutExpired as exc:  # the failure this test exists for: a job that never ends
        pytest.fail(f"torchrun hung after a rank was killed: {exc}")


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    from genctr.errors import ConfigError
    from genctr.training.distributed import World, check_batch, launch_env, shard

    with pytest.raises(ConfigError, match=r"batch_size 65 .* divisible by the 2 data-parallel processes"):
        check_batch(65, World(0, 2, 0, active=True))
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        launch_env({"RANK": "0"})
    with pytest.raises(ConfigError, match="inconsistent"):
        launch_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert launch_env({}) is None
    # a short batch of 5 over 2 ranks: rows 0-1 and 2-4, weighted so the average is the 5-row mean
    idx = torch.arange(10, 15)
    (a, wa), (b, wb) = (shard(idx, World(r, 2, r, active=True)) for r in (0, 1))
    assert a.tolist() == [10, 11] and b.tolist() == [12, 13, 14]
    assert (wa, wb) == (2 * 2 / 5, 3 * 2 / 5)
    assert shard(idx[:1], World(0, 2, 0, active=True))[1] == 0.0  # no row: joins the all-reduce at weight 0
