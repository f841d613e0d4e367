"""A feature build loaded once onto the device; batches are gathered there by index.

Histories are CSR: ``hist_item``/``hist_cate`` hold every user's time-sorted behaviours
back to back (index 0 is a padding sentinel), and a sample points at its user's block by
``start`` (first behaviour) and ``end = start + hist_end``. Gathering a batch is a few
index operations on device tensors: no per-sample Python and no DataLoader.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import Tensor

from genctr.errors import ArtifactError
from genctr.features.layout import SPLITS, BuildLayout
from genctr.training.windows import heldout_windows, strided_windows

SAMPLE_COLUMNS = ["user_id", "user_idx", "item_idx", "cate_idx", "price", "label", "hist_end", "seq_len"]


@dataclass
class Split:
    """One split's samples as device tensors, each of shape (N,)."""

    user: Tensor
    item: Tensor
    cate: Tensor
    price: Tensor
    label: Tensor
    end: Tensor  # (N,) int64: one past the last visible behaviour in the flat arrays
    seq_len: Tensor  # (N,) int64: behaviours visible to the model, <= L
    user_raw: np.ndarray  # (N,) raw user ids (host): for gAUC

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, idx: Tensor) -> Split:
        """The rows ``idx`` (K,) long, in that order."""
        host = idx.cpu().numpy()
        return Split(**{f.name: getattr(self, f.name)[host if f.name == "user_raw" else idx] for f in fields(Split)})


def concat_splits(parts: list[Split]) -> Split:
    """The rows of every part, back to back (one corpus from several kinds of sample)."""
    def cat(name: str) -> Tensor:
        return torch.cat([getattr(p, name) for p in parts])

    return Split(user=cat("user"), item=cat("item"), cate=cat("cate"), price=cat("price"), label=cat("label"),
                 end=cat("end"), seq_len=cat("seq_len"), user_raw=np.concatenate([p.user_raw for p in parts]))


class FeatureData:
    """Samples of every split plus flat behaviour arrays, on ``device``."""

    def __init__(self, build_dir: str, max_seq_len: int, device: torch.device | str = "cpu") -> None:
        self.layout = BuildLayout(build_dir)
        if not self.layout.stats.exists():
            raise ArtifactError(f"{build_dir} is not a feature build (no stats.json); run `genctr features build`")
        self.stats = json.loads(self.layout.stats.read_text())
        self.device = torch.device(device)
        self.max_seq_len = max_seq_len
        hist = pq.read_table(self.layout.histories).to_pandas()
        lengths = hist["n_behaviors"].to_numpy(np.int64)
        # flat position 0 is a padding sentinel, so user blocks start at 1
        starts = np.concatenate([[1], 1 + np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
        self._user_index = pd.Index(hist["user_id"].to_numpy())
        self._hist_user_idx = hist["user_idx"].to_numpy(np.int64)  # (U,) user vocabulary index of each row
        self._user_start = starts
        self.n_train_behaviors = hist["n_train_behaviors"].to_numpy(np.int64)
        self.hist_lengths = lengths
        self.hist_item = self._flat(hist["item_seq"])
        self.hist_cate = self._flat(hist["cate_seq"])
        self.splits = {s: self._load_split(s) for s in SPLITS}
        self.vocab_sizes = {k: int(self.stats["vocab_sizes"][k]) for k in ("user", "item", "category")}

    def _flat(self, col: pd.Series) -> Tensor:
        arrays = [np.zeros(1, np.int64)] + [np.asarray(a, np.int64) for a in col]
        return torch.from_numpy(np.concatenate(arrays)).to(self.device)

    def _load_split(self, split: str) -> Split:
        df = pq.read_table(self.layout.samples(split), columns=SAMPLE_COLUMNS).to_pandas()
        rows = self._user_index.get_indexer(df["user_id"].to_numpy())
        if (rows < 0).any():
            raise ArtifactError(f"{split}: samples reference users missing from histories")
        start = self._user_start[rows]
        dev = self.device

        def t(x: np.ndarray, dtype: torch.dtype) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(x)).to(dev, dtype)

        return Split(
            user=t(df["user_idx"].to_numpy(), torch.long), item=t(df["item_idx"].to_numpy(), torch.long),
            cate=t(df["cate_idx"].to_numpy(), torch.long), price=t(df["price"].to_numpy(), torch.float32),
            label=t(df["label"].to_numpy(), torch.float32),
            end=t(start + df["hist_end"].to_numpy(np.int64), torch.long),
            seq_len=t(np.minimum(df["seq_len"].to_numpy(np.int64), self.max_seq_len), torch.long),
            user_raw=df["user_id"].to_numpy(),
        )

    def gather_history(self, end: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) block ends and lengths -> left-aligned (B, L) item and category indices."""
        L = self.max_seq_len
        j = torch.arange(L, device=end.device)  # (L,)
        src = end[:, None] - length[:, None] + j  # (B, L): oldest visible first
        valid = j < length[:, None]  # (B, L)
        src = torch.where(valid, src, torch.zeros_like(src))  # padding reads the sentinel 0
        return self.hist_item[src], self.hist_cate[src]

    def batch(self, split: Split, idx: Tensor) -> dict[str, Tensor]:
        """Gather the samples ``idx`` (B,) into the models' batch dict."""
        length = split.seq_len[idx]
        hist_item, hist_cate = self.gather_history(split.end[idx], length)
        return {
            "user": split.user[idx], "item": split.item[idx], "cate": split.cate[idx],
            "price": split.price[idx], "label": split.label[idx],
            "hist_item": hist_item, "hist_cate": hist_cate, "hist_len": length,
        }

    def pretrain_windows(self, stride: int | None = None) -> tuple[Tensor, Tensor]:
        """Training-period behaviour windows for sequence pretraining: (ends, lengths), each (W,).

        Each user's training behaviours are cut, from the most recent backwards, into windows of
        at most L whose ends lie ``stride`` apart (default L: no overlap), the oldest one starting
        at the user's first behaviour, so every training behaviour is a next-item target at least
        once (see ``genctr.training.windows``).
        """
        L = self.max_seq_len
        user, end, length = strided_windows(self.n_train_behaviors, L, L if stride is None else stride)
        return self._on_device(self._user_start[user] + end, length)

    def heldout_windows(self) -> tuple[Tensor, Tensor, Tensor]:
        """Windows whose targets are the valid period's behaviours: (ends, lengths, target_from).

        A user's valid-period behaviours directly follow their training behaviours. Without a
        behaviour log they are the clicks of the user's valid impressions; with one (``stats.json``
        has ``behaviour_log``) they are every behaviour after the training prefix and strictly
        before the user's first test impression (all of them for a user without test rows). Each
        is a target once, with at least L/2 earlier behaviours as context where the user has them;
        ``target_from`` [W] is the window-relative index of the first target (positions before it
        are context only).
        """
        L = self.max_seq_len
        user, end, length, target_from = heldout_windows(self.n_train_behaviors, self.valid_behaviours(), L,
                                                         max(1, L // 2))
        ends, lengths = self._on_device(self._user_start[user] + end, length)
        return ends, lengths, torch.as_tensor(target_from, device=self.device, dtype=torch.long)

    def valid_behaviours(self) -> np.ndarray:
        """(users,) int64: how many behaviours of each user fall in the valid period (see heldout_windows)."""
        n_users = len(self._user_start)
        if "behaviour_log" not in self.stats:  # behaviours are clicks: the valid impressions' clicks
            valid = self.splits["valid"]
            rows = self._user_index.get_indexer(valid.user_raw)
            return np.bincount(rows, weights=valid.label.cpu().numpy(), minlength=n_users).astype(np.int64)
        test = self.splits["test"]
        rows = self._user_index.get_indexer(test.user_raw)
        hist_end = test.end.cpu().numpy() - self._user_start[rows]  # (N_test,): behaviours before each
        before_test = self.hist_lengths.copy()  # users without test rows: every behaviour they have
        np.minimum.at(before_test, rows, hist_end)
        return np.maximum(before_test - self.n_train_behaviors, 0)

    def behaviour_samples(self) -> Split:
        """Every training-period behaviour as a sample, in flat (user, time) order: DGenCTR's behaviour corpus.

        Behaviour j of a user (0-based, oldest first) gives user = the user's index, item / cate = the
        behaviour's, history = the user's behaviours before it (the last L; none reach past the training
        period, since training behaviours come first in a user's block), price = the item's catalogue price
        (``item_prices``: histories hold none, and an "unknown" price only behaviours had would tell the
        denoiser which kind of sample it sees) and label 0, a placeholder: a behaviour has no impression
        label, so callers treat it as unknown. The user index is the histories' own ``user_idx``.
        """
        n = self.n_train_behaviors  # (U,)
        rows = np.repeat(np.arange(len(n)), n)  # (M,) history row (user) of each behaviour
        local = np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)  # (M,) j: behaviours before it
        pos = self._user_start[rows] + local  # (M,) flat position of the behaviour itself
        dev = self.device
        flat = torch.as_tensor(pos, device=dev, dtype=torch.long)
        item = self.hist_item[flat]
        return Split(
            user=torch.as_tensor(self._hist_user_idx[rows], device=dev, dtype=torch.long),
            item=item, cate=self.hist_cate[flat],
            price=self.item_prices()[item], label=torch.zeros(len(rows), device=dev),
            end=flat,  # one past the last visible behaviour: the ones before this one
            seq_len=torch.as_tensor(np.minimum(local, self.max_seq_len), device=dev, dtype=torch.long),
            user_raw=self._user_index.to_numpy()[rows],
        )

    def train_item_counts(self) -> Tensor:
        """(n_items,) how often each item index occurs among training-period behaviours."""
        lengths = self.hist_lengths
        local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        is_train = local < np.repeat(self.n_train_behaviors, lengths)  # (sum n_behaviors,)
        items = self.hist_item[1:][torch.as_tensor(is_train, device=self.device)]  # flat position 0: sentinel
        return torch.bincount(items, minlength=self.vocab_sizes["item"])

    def _on_device(self, ends: np.ndarray, lengths: np.ndarray) -> tuple[Tensor, Tensor]:
        return (torch.as_tensor(ends, device=self.device, dtype=torch.long),
                torch.as_tensor(lengths, device=self.device, dtype=torch.long))

    def sequence_batch(self, ends: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        seq_item, seq_cate = self.gather_history(ends, lengths)
        return {"seq_item": seq_item, "seq_cate": seq_cate, "seq_len": lengths}

    def item_prices(self) -> Tensor:
        """(n_items,) float32 catalogue price of every item index (the items table's; 0 = unknown, as for
        padding, OOV and items only a behaviour log has)."""
        items = pq.read_table(self.layout.items, columns=["item_idx", "price"]).to_pandas()
        items = items[items["item_idx"] >= 2]
        table = np.zeros(self.vocab_sizes["item"], np.float32)
        table[items["item_idx"].to_numpy()] = items["price"].fillna(0.0).to_numpy(np.float32)
        return torch.as_tensor(table, device=self.device)

    def item_categories(self) -> Tensor:
        """(n_items,) category index of every item index (0/1 rows map to padding/OOV)."""
        items = pq.read_table(self.layout.items, columns=["item_idx", "cate_idx"]).to_pandas()
        table = np.zeros(self.vocab_sizes["item"], np.int64)
        table[1] = 1
        items = items[items["item_idx"] >= 2]  # unseen items share the OOV row
        table[items["item_idx"].to_numpy()] = items["cate_idx"].to_numpy()
        return torch.as_tensor(table, device=self.device)
