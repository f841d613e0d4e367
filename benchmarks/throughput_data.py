"""Taobao-like synthetic data for the throughput benchmark, in both libraries' formats.

One seeded numpy world feeds genctr and FuxiCTR with *the same rows*:

* behaviours: every user has a time-ordered click sequence (item, category) whose category
  drifts slowly around the user's favourite categories (so next-item pretraining has
  something to learn); items within a category follow a skewed popularity;
* impressions (the CTR rows): a user, a point in their history (``hist_end``), a target item
  (half from a category of the recent history, half from anywhere) and a click drawn from

      logit = -1.4 + quality(item) + bias(user) + 2.5 * share of target's category in the
              last ``seq_len`` behaviours + 1.0 * [target item among them] + 0.3 * log1p(price)

  so a model must read the behaviour sequence to approach the ground-truth AUC;
* a random 80/10/10 row split (train / valid / held-out test).

``write_genctr_build`` writes the parts of a feature build (see ``genctr.features.layout``)
that :class:`genctr.training.data.FeatureData` reads; ``write_fuxictr_npz`` writes FuxiCTR's
``feature_map.json`` and one npz per split (its ``NpzDataLoader`` format), with the last
``seq_len`` behaviours of each row as ``item_history``/``cate_history`` (padding 0).
Vocabulary indices follow genctr's layout in both: 0 = padding, 1 = OOV, >= 2 real.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIRST = 2  # first real vocabulary index (0 pad, 1 OOV)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class World:
    """The generated data: flat CSR behaviours plus per-row impressions (numpy, host)."""

    n_users: int  # table sizes (largest index + 1)
    n_items: int
    n_cates: int
    item_cate: np.ndarray  # [n_items] category index of each item index
    user_start: np.ndarray  # [U] first behaviour of user u in the flat arrays
    user_len: np.ndarray  # [U] behaviours of user u
    beh_item: np.ndarray  # [total] flat behaviour items (int32)
    beh_cate: np.ndarray  # [total] flat behaviour categories (int32)
    user: np.ndarray  # [N] user index of each row (>= 2)
    item: np.ndarray  # [N] target item
    cate: np.ndarray  # [N] target category
    price: np.ndarray  # [N] float32
    hist_end: np.ndarray  # [N] behaviours of the user before the impression
    label: np.ndarray  # [N] float32 0/1
    true_p: np.ndarray  # [N] ground-truth click probability
    split: np.ndarray  # [N] 0 train, 1 valid, 2 test

    @property
    def rows(self) -> int:
        return int(self.label.shape[0])

    def split_rows(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.split == k)


def make_world(rows: int, seed: int = 0, n_users: int = 50_000, n_items: int = 200_000,
               n_cates: int = 2_000, seq_len: int = 50, min_beh: int = 20, max_beh: int = 400) -> World:
    """A seeded world with ``rows`` impressions; see the module docstring."""
    rng = np.random.default_rng(seed)
    n_user_ids, n_item_ids, n_cate_ids = n_users + FIRST, n_items + FIRST, n_cates + FIRST
    cate_pop = rng.dirichlet(np.full(n_cates, 0.3))
    item_cate = np.concatenate([[0, 1], FIRST + rng.choice(n_cates, n_items, p=cate_pop)]).astype(np.int64)
    order = np.argsort(item_cate, kind="stable")
    counts = np.bincount(item_cate, minlength=n_cate_ids)
    starts = np.cumsum(counts) - counts
    counts[:FIRST] = 0
    quality = rng.normal(0.0, 0.5, n_item_ids)
    price = np.round(rng.lognormal(1.0, 1.0, n_item_ids), 2).astype(np.float32)

    def item_of(cat: np.ndarray) -> np.ndarray:  # popularity-skewed item of each category
        u = rng.random(cat.shape) ** 2
        return order[starts[cat] + np.minimum((u * counts[cat]).astype(np.int64), counts[cat] - 1)]

    users = np.arange(FIRST, n_user_ids)
    fav = FIRST + rng.choice(n_cates, (n_users, 3), p=cate_pop)  # favourite categories
    user_bias = np.zeros(n_user_ids)
    user_bias[FIRST:] = rng.normal(0.0, 0.3, n_users)
    lens = rng.integers(min_beh, max_beh + 1, n_users)
    cur = fav[:, 0].copy()
    cates = np.empty((n_users, max_beh), np.int64)
    for t in range(max_beh):  # category drift, vectorised over users
        move = rng.random(n_users) < 0.25
        pick = np.where(rng.random(n_users) < 0.8, fav[np.arange(n_users), rng.integers(0, 3, n_users)],
                        FIRST + rng.choice(n_cates, n_users, p=cate_pop))
        cur = np.where(move, pick, cur)
        cates[:, t] = cur
    keep = np.arange(max_beh)[None, :] < lens[:, None]
    beh_cate = cates[keep]  # row-major: user by user, oldest first
    beh_item = item_of(beh_cate)
    user_start = np.concatenate([[0], np.cumsum(lens)[:-1]])

    # impressions
    ur = rng.integers(0, n_users, rows)
    hist_end = (rng.random(rows) * (lens[ur] + 1)).astype(np.int64)
    from_hist = (rng.random(rows) < 0.5) & (hist_end > 0)
    back = np.minimum(hist_end, seq_len)
    pos = user_start[ur] + hist_end - 1 - (rng.random(rows) * np.maximum(back, 1)).astype(np.int64)
    t_cate = np.where(from_hist, beh_cate[np.maximum(pos, 0)], FIRST + rng.choice(n_cates, rows, p=cate_pop))
    t_item = item_of(t_cate)
    share, seen = _recent_match(beh_cate, beh_item, user_start[ur], hist_end, t_cate, t_item, seq_len)
    logit = (-1.4 + quality[t_item] + user_bias[users[ur]] + 2.5 * share + 1.0 * seen
             + 0.3 * np.log1p(price[t_item]))
    true_p = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(rows) < true_p).astype(np.float32)
    split = np.searchsorted(np.cumsum(SPLIT_FRACTIONS), rng.random(rows), side="right").clip(max=2)
    return World(n_user_ids, n_item_ids, n_cate_ids, item_cate, user_start, lens, beh_item.astype(np.int32),
                 beh_cate.astype(np.int32), users[ur], t_item, t_cate, price[t_item], hist_end, label, true_p, split)


def _recent_match(beh_cate, beh_item, start, hist_end, t_cate, t_item, seq_len, chunk=200_000):
    """Share of the target's category and presence of the target item in the last seq_len."""
    share = np.zeros(len(start))
    seen = np.zeros(len(start))
    for s in range(0, len(start), chunk):
        sl = slice(s, s + chunk)
        c, i = _window(beh_cate, start[sl], hist_end[sl], seq_len), _window(beh_item, start[sl], hist_end[sl], seq_len)
        n = np.maximum(np.minimum(hist_end[sl], seq_len), 1)
        share[sl] = (c == t_cate[sl, None]).sum(1) / n
        seen[sl] = (i == t_item[sl, None]).any(1)
    return share, seen


def _window(flat: np.ndarray, start: np.ndarray, end: np.ndarray, L: int) -> np.ndarray:
    """[n, L] the last min(end, L) behaviours, oldest first, left-aligned, 0-padded."""
    length = np.minimum(end, L)
    j = np.arange(L)[None, :]
    src = start[:, None] + end[:, None] - length[:, None] + j
    valid = j < length[:, None]
    return np.where(valid, flat[np.where(valid, src, 0)], 0)


def write_genctr_build(w: World, root: Path, max_seq_len: int, pretrain_holdout: float = 0.05) -> Path:
    """The parquet files and stats.json that ``FeatureData`` reads.

    ``n_train_behaviors`` (what pretraining may see) is every behaviour of all users except a
    ``pretrain_holdout`` share of users, whose sequences evaluate next-item prediction.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    n_users = len(w.user_len)
    held = rng.random(n_users) < pretrain_holdout
    offsets = pa.array(np.concatenate([[0], np.cumsum(w.user_len)]).astype(np.int32))
    uid = np.arange(FIRST, FIRST + n_users, dtype=np.int64)
    hist = pa.table({
        "user_id": uid, "user_idx": uid.astype(np.int32),
        "n_behaviors": w.user_len.astype(np.int32),
        "n_train_behaviors": np.where(held, 0, w.user_len).astype(np.int32),
        "item_seq": pa.ListArray.from_arrays(offsets, pa.array(w.beh_item)),
        "cate_seq": pa.ListArray.from_arrays(offsets, pa.array(w.beh_cate)),
    })
    _write(hist, root / "histories")
    for k, name in enumerate(("train", "valid", "test")):
        r = w.split_rows(k)
        _write(pa.table({
            "user_id": w.user[r].astype(np.int64), "user_idx": w.user[r].astype(np.int32),
            "item_idx": w.item[r].astype(np.int32), "cate_idx": w.cate[r].astype(np.int32),
            "price": w.price[r], "label": w.label[r].astype(np.int8),
            "hist_end": w.hist_end[r].astype(np.int32),
            "seq_len": np.minimum(w.hist_end[r], max_seq_len).astype(np.int32),
        }), root / "samples" / name)
    items = np.arange(w.n_items)
    _write(pa.table({"item_idx": items.astype(np.int32), "cate_idx": w.item_cate.astype(np.int32)}), root / "items")
    stats = {"vocab_sizes": {"user": w.n_users, "item": w.n_items, "category": w.n_cates},
             "max_seq_len": max_seq_len}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def heldout_user_blocks(root: Path) -> np.ndarray:
    """User rows (0-based) whose behaviours pretraining never saw (n_train_behaviors == 0)."""
    t = pq.read_table(root / "histories", columns=["n_train_behaviors", "n_behaviors"]).to_pandas()
    return np.flatnonzero((t["n_train_behaviors"] == 0) & (t["n_behaviors"] >= 2))


def _write(table: pa.Table, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")


FUXI_SEQ = ("item_history", "cate_history")


def write_fuxictr_npz(w: World, root: Path, seq_len: int, rows: np.ndarray | None = None) -> Path:
    """FuxiCTR's feature_map.json plus train/valid/test npz files (optionally a row subset).

    Feature order = the column order its loaders stack; the sequences share the item and
    category tables (``share_embedding``) like genctr's history does.
    """
    root.mkdir(parents=True, exist_ok=True)
    keep = np.ones(w.rows, bool) if rows is None else np.isin(np.arange(w.rows), rows)
    for k, name in enumerate(("train", "valid", "test")):
        r = np.flatnonzero((w.split == k) & keep)
        start = w.user_start[w.user[r] - FIRST]
        np.savez(root / f"{name}.npz",
                 user_id=w.user[r], item_id=w.item[r], cate_id=w.cate[r],
                 price=np.log1p(w.price[r]).astype(np.float32),  # genctr also feeds log1p(price)
                 item_history=_window(w.beh_item, start, w.hist_end[r], seq_len),
                 cate_history=_window(w.beh_cate, start, w.hist_end[r], seq_len),
                 clicked=w.label[r])
    return root


def fuxictr_feature_map(root: Path, seq_len: int, n_users: int, n_items: int, n_cates: int,
                        pooled: bool) -> dict:
    """feature_map.json content; ``pooled`` = masked-mean-pool the sequences (DNN, DCNv2).

    DIN leaves them unpooled: its attention layer pools them.
    """
    enc = "layers.MaskedAveragePooling()" if pooled else None

    def cat(name: str, vocab: int) -> dict:
        return {name: {"source": "", "type": "categorical", "vocab_size": vocab, "padding_idx": 0}}

    def seq(name: str, share: str, vocab: int) -> dict:
        return {name: {"source": "", "type": "sequence", "vocab_size": vocab, "padding_idx": 0,
                       "max_len": seq_len, "share_embedding": share, "feature_encoder": enc}}

    return {
        "dataset_id": "genctr_synth", "num_fields": 6, "total_features": n_users + n_items + n_cates + 1,
        "input_length": 4 + 2 * seq_len, "labels": ["clicked"],
        "features": [cat("user_id", n_users), cat("item_id", n_items), cat("cate_id", n_cates),
                     {"price": {"source": "", "type": "numeric"}},
                     seq("item_history", "item_id", n_items), seq("cate_history", "cate_id", n_cates)],
    }
