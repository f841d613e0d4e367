"""Score one feature build with a model trained on another build's vocabularies.

Indices are per build (vocabularies are refitted every run), so a champion trained last
week cannot read this week's indices directly. Each build index is translated through its
raw id into the model's own vocabulary (unknown raw id -> OOV). Build-OOV rows stay OOV.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from genctr.features.layout import OOV, PAD
from genctr.training.data import FeatureData

VOCABS = ("user", "item", "category")


def read_vocab(path: str | Path) -> pd.Series:
    """raw_id -> idx of one vocabulary directory (Parquet)."""
    df = pd.read_parquet(path, columns=["raw_id", "idx"])
    return pd.Series(df["idx"].to_numpy(np.int64), index=df["raw_id"].to_numpy(np.int64))


def translation(build_vocab: pd.Series, model_vocab: pd.Series, size: int) -> np.ndarray:
    """(size,) table: build index -> model index (PAD -> PAD, OOV/unknown -> OOV)."""
    table = np.full(size, OOV, np.int64)
    table[PAD] = PAD
    pos = model_vocab.index.get_indexer(build_vocab.index)
    hit = pos >= 0
    table[build_vocab.to_numpy()[hit]] = model_vocab.to_numpy()[pos[hit]]
    return table


def translate(data: FeatureData, model_dir: str | Path) -> FeatureData:
    """A shallow copy of ``data`` whose index tensors speak ``model_dir``'s vocabularies."""
    tables = {}
    for name in VOCABS:
        b = read_vocab(data.layout.vocab(name))
        m = read_vocab(Path(model_dir) / "vocab" / name)
        tables[name] = torch.as_tensor(translation(b, m, data.vocab_sizes[name]), device=data.device)
    if all(torch.equal(t, torch.arange(len(t), device=t.device)) for t in tables.values()):
        return data  # same vocabularies: nothing to do
    out = copy.copy(data)
    out.hist_item = tables["item"][data.hist_item]
    out.hist_cate = tables["category"][data.hist_cate]
    out.splits = {k: copy.copy(s) for k, s in data.splits.items()}
    for s in out.splits.values():
        s.user, s.item, s.cate = tables["user"][s.user], tables["item"][s.item], tables["category"][s.cate]
    return out
