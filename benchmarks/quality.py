"""Test AUC per epoch of genctr's CTR backbones on the throughput benchmark's synthetic world.

    python benchmarks/quality.py --models dnn dcnv2 --epochs 3
    python benchmarks/quality.py --models dnn --epochs 3 --set init=torch --set init=xavier
    python benchmarks/quality.py --models dcnv2_ta --seq --set attention_pooling=sum --set attention_pooling=mean

Each ``--set KEY=VALUE`` is one variant (a ModelConfig override; ``--set a=1,b=2`` sets two
fields at once); without any, the defaults run. The world, the split, the settings (batch
4096, embedding 16, MLP [1024, 512, 256], Adam 1e-3, clipping 10, dropout 0) and the seed are
those of ``throughput.py``, so the AUCs line up with its table and with FuxiCTR's there.
``--seq`` trains on the 100k-row subset the sequence models use. Prints one line per variant
with the AUC after each epoch and the ground-truth click model's AUC on the same rows; writes
``benchmarks/results/quality.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import throughput as tp
import throughput_data as td

HERE = Path(__file__).resolve().parent
log = logging.getLogger("quality")


def parse_set(text: str) -> dict:
    """``"a=1,b=xavier"`` -> ModelConfig overrides, typed like ``genctr train --model key=value``."""
    from genctr.config import parse_assignments
    from genctr.models.config import ModelConfig

    return parse_assignments(ModelConfig, [pair for pair in text.split(",") if pair], "model", flag="set")


def run_variant(data, backbone: str, overrides: dict[str, str], args) -> list[float]:
    import dataclasses

    from genctr.config import from_dict
    from genctr.models.config import ModelConfig
    from genctr.models.transfer import build_ctr_model
    from genctr.training.config import TrainConfig
    from genctr.training.loop import fit
    from genctr.training.run import ctr_objective

    base = dataclasses.asdict(tp.ctr_config(backbone, data, args.seq_len))
    cfg = from_dict(ModelConfig, {**base, **overrides})  # typed and validated like a user config
    torch.manual_seed(args.seed)
    model = build_ctr_model(cfg)
    s = data.splits["train"]
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, grad_clip=10.0, seed=args.seed,
                        progress=False)
    with tempfile.TemporaryDirectory(prefix="quality-ckpt-") as ckpt:
        hist = fit(model, ctr_objective, len(s), lambda idx: data.batch(s, idx), train, ckpt,
                   evaluate=lambda m: {"test_auc": tp.test_auc(m, data)})
    return [h["test_auc"] for h in hist]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["dnn", "dcnv2"], choices=tp.GENCTR_CTR)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="one variant per --set (ModelConfig overrides); none = the defaults")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seq", action="store_true", help="train on the 100k-row subset (as the sequence models do)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="where the generated build goes (default: a temp dir)")
    p.add_argument("--out", default=str(HERE / "results" / "quality.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("genctr").setLevel(logging.WARNING)
    from genctr.training.data import FeatureData

    world = td.make_world(300_000, seed=args.seed, n_users=20_000, n_items=50_000, n_cates=500, seq_len=args.seq_len)
    rows = np.arange(100_000) if args.seq else None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="genctr-quality-"))
    root = work / ("genctr_subset" if args.seq else "genctr_full")
    if not (root / "stats.json").exists():
        td.write_genctr_build(tp.subset(world, rows), root, max_seq_len=200)
    data = FeatureData(str(root), args.seq_len, "cpu")
    truth = tp.truth_auc(world, rows)
    results = []
    for backbone in args.models:
        for text in args.sets or [""]:
            t0 = time.perf_counter()
            aucs = run_variant(data, backbone, parse_set(text), args)
            results.append({"model": backbone, "set": text or "defaults", "test_auc_per_epoch": aucs,
                            "seconds": round(time.perf_counter() - t0, 1)})
            log.info("%s %s: test AUC per epoch %s", backbone, text or "defaults", [round(a, 4) for a in aucs])
    report = {"command": " ".join(["quality.py"] + sys.argv[1:]), "ground_truth_test_auc": truth,
              "rows": "subset" if args.seq else "all", "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"ground-truth click model test AUC: {truth:.4f}")
    for r in results:
        print(f"{r['model']:9s} {r['set']:32s} " + "  ".join(f"{a:.4f}" for a in r["test_auc_per_epoch"]))


if __name__ == "__main__":
    main()
