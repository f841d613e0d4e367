"""Time (and optionally profile) single training steps of genctr models on random batches.

A step is what ``genctr.training.loop.fit`` does per batch: objective, zero_grad, backward,
gradient clipping, optimizer step, with the loop's own optimizer and clipping helpers.
Used to find and check the hot spots behind ``throughput.py``; run it against another
checkout with ``PYTHONPATH=<checkout>/src`` to compare before/after on the same machine.

    python benchmarks/profile_step.py dcnv2_ta --seq-len 50 --reps 7 --profile
    python benchmarks/profile_step.py genctr --seq-len 200 --batch-size 256
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from genctr.models.config import ModelConfig
from genctr.training import loop
from genctr.training.config import TrainConfig

VOCAB = {"user": 50_002, "item": 200_002, "cate": 2_002}


def ctr_setup(backbone: str, L: int, B: int):
    from genctr.models.transfer import build_ctr_model
    from genctr.training.run import ctr_objective

    cfg = ModelConfig(backbone=backbone, embed_dim=16, mlp_dims=(1024, 512, 256), cross_layers=3,
                      attention_dims=(64,), dropout=0.0, n_users=VOCAB["user"], n_items=VOCAB["item"],
                      n_cates=VOCAB["cate"], max_seq_len=L)
    model = build_ctr_model(cfg)
    g = torch.Generator().manual_seed(0)
    hist_len = torch.randint(0, L + 1, (B,), generator=g)
    live = torch.arange(L)[None] < hist_len[:, None]
    batch = {"user": torch.randint(2, VOCAB["user"], (B,), generator=g),
             "item": torch.randint(2, VOCAB["item"], (B,), generator=g),
             "cate": torch.randint(2, VOCAB["cate"], (B,), generator=g),
             "price": torch.rand(B, generator=g) * 10, "label": torch.randint(0, 2, (B,), generator=g).float(),
             "hist_item": torch.randint(2, VOCAB["item"], (B, L), generator=g) * live,
             "hist_cate": torch.randint(2, VOCAB["cate"], (B, L), generator=g) * live, "hist_len": hist_len}
    return model, batch, ctr_objective


def genctr_setup(L: int, B: int, d_model: int, k: int, dropout: float | None, attn_dropout: float | None = None):
    from genctr.models.genctr import GenCTR
    from genctr.training.run import genctr_objective

    g = torch.Generator().manual_seed(0)
    item_cate = torch.randint(2, VOCAB["cate"], (VOCAB["item"],), generator=g)
    item_cate[:2] = torch.tensor([0, 1])
    decoder: dict = {"d_model": d_model}
    if dropout is not None:
        decoder["dropout"] = dropout
    if attn_dropout is not None:
        decoder["attn_dropout"] = attn_dropout
    cfg = ModelConfig(embed_dim=16, n_users=VOCAB["user"], n_items=VOCAB["item"], n_cates=VOCAB["cate"],
                      max_seq_len=L, n_negatives=k, decoder=decoder)
    model = GenCTR(cfg, item_cate=item_cate)
    length = torch.randint(L // 2, L + 1, (B,), generator=g)
    live = torch.arange(L)[None] < length[:, None]
    items = torch.randint(2, VOCAB["item"], (B, L), generator=g) * live
    return model, {"seq_item": items, "seq_cate": item_cate[items], "seq_len": length}, genctr_objective


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["dnn", "dcnv2", "dcnv2_ta", "genctr"])
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=None, help="default 4096 (CTR), 256 (genctr)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--negatives", type=int, default=20)
    p.add_argument("--dropout", type=float, default=None, help="genctr decoder dropout (default: config's)")
    p.add_argument("--attn-dropout", type=float, default=None, help="genctr attention-weight dropout")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B = a.batch_size or (256 if a.model == "genctr" else 4096)
    if a.model == "genctr":
        model, batch, objective = genctr_setup(a.seq_len, B, a.d_model, a.negatives, a.dropout,
                                                a.attn_dropout)
    else:
        model, batch, objective = ctr_setup(a.model, a.seq_len, B)
    tcfg = TrainConfig(batch_size=B)
    opt = loop.make_optimizer(model, tcfg)
    clip = getattr(loop, "clip_gradients", None)
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        loss = objective(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            clip(model, tcfg.grad_clip)
        else:
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()

    step()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{a.model} L={a.seq_len} B={B}: best {B / times[0]:,.0f} /s, median {B / times[len(times) // 2]:,.0f} /s "
          f"(best step {times[0] * 1e3:.0f} ms)")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
