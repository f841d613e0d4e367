"""A tiny feature build written directly with pandas (no Spark): unit-sized training-run tests.

It follows ``genctr.features.layout``: per-user time-ordered 80/10/10 splits, behaviours = the
clicked impressions in time order, ``hist_end`` = behaviours strictly before the impression,
``n_train_behaviors`` = clicks of the training split. Clicks depend on the item (a third of the
items are "liked"), so a model can learn something in a few steps.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

N_USERS, N_ITEMS, N_CATES = 30, 40, 6  # real ids; tables have 2 more rows (padding, OOV)


def write_tiny_build(root: Path, max_seq_len: int = 8, seed: int = 0) -> Path:
    """Write the build under ``root`` and return it (idempotent per directory)."""
    if (root / "stats.json").exists():
        return root
    rng = np.random.default_rng(seed)
    item_idx = np.arange(2, N_ITEMS + 2)
    item_cate = 2 + item_idx % N_CATES  # (N_ITEMS,) category index of each item index
    liked = rng.random(N_ITEMS) < 0.35
    samples, hist = [], []
    for u in range(N_USERS):
        n = int(rng.integers(12, 40))
        items = rng.integers(0, N_ITEMS, n)  # positions into item_idx
        label = (rng.random(n) < np.where(liked[items], 0.7, 0.2)).astype("int8")
        split = np.array(["train"] * n, dtype=object)
        n_train, n_valid = max(1, int(n * 0.8)), max(int(n * 0.8), int(n * 0.9))
        split[n_train:n_valid], split[n_valid:] = "valid", "test"
        hist_end = np.concatenate([[0], np.cumsum(label)[:-1]])  # clicks strictly before each impression
        samples.append(pd.DataFrame({
            "sample_id": u * 1000 + np.arange(n), "user_id": 100 + u, "item_id": 500 + items,
            "user_idx": u + 2, "item_idx": item_idx[items], "cate_idx": item_cate[items],
            "price": np.zeros(n, np.float32), "event_time": 1_600_000_000 + np.arange(n), "label": label,
            "hist_end": hist_end.astype("int32"), "seq_len": np.minimum(hist_end, max_seq_len).astype("int32"),
            "last_beh_time": -1, "split": split,
        }))
        clicked = items[label == 1]
        hist.append({"user_id": 100 + u, "user_idx": u + 2, "n_behaviors": len(clicked),
                     "n_train_behaviors": int(label[:n_train].sum()),
                     "item_seq": item_idx[clicked].astype("int32"), "cate_seq": item_cate[clicked].astype("int32"),
                     "time_seq": 1_600_000_000 + np.flatnonzero(label)})
    df = pd.concat(samples, ignore_index=True)
    for name in ("train", "valid", "test"):
        (root / "samples" / name).mkdir(parents=True)
        df[df.split == name].drop(columns="split").to_parquet(root / "samples" / name / "part-0.parquet")
    root.joinpath("histories").mkdir()
    pd.DataFrame(hist).to_parquet(root / "histories" / "part-0.parquet")
    root.joinpath("items").mkdir()
    pd.DataFrame({"item_id": 500 + np.arange(N_ITEMS), "item_idx": item_idx, "category_id": item_cate - 2,
                  "cate_idx": item_cate, "price": 0.0}).to_parquet(root / "items" / "part-0.parquet")
    for name, raw, idx in (("user", 100 + np.arange(N_USERS), 2 + np.arange(N_USERS)),
                           ("item", 500 + np.arange(N_ITEMS), item_idx), ("category", np.arange(N_CATES),
                                                                          2 + np.arange(N_CATES))):
        (root / "vocab" / name).mkdir(parents=True)
        pd.DataFrame({"raw_id": raw.astype("int64"), "idx": idx.astype("int32")}).to_parquet(
            root / "vocab" / name / "part-0.parquet")
    stats = {"max_seq_len": max_seq_len,
             "vocab_sizes": {"user": N_USERS + 2, "item": N_ITEMS + 2, "category": N_CATES + 2}}
    (root / "stats.json").write_text(json.dumps(stats))
    return root
