"""On-disk layout of a feature build: the contract between Spark, GX, Feast and training.

A build directory holds (all Parquet written by Spark; read by pyarrow/pandas or Spark):

    samples/train, samples/valid, samples/test   one row per impression
        sample_id      int64   the event's request_id
        user_id        int64   raw id (for gAUC and Feast look-ups)
        item_id        int64   raw id
        user_idx       int32   vocabulary index (0 = padding, 1 = out-of-vocabulary)
        item_idx       int32
        cate_idx       int32
        price          float32
        event_time     int64   epoch seconds
        label          int8    clicked
        hist_end       int32   behaviours of this user strictly earlier than event_time;
                               the history is behaviours[offset[u] : offset[u] + hist_end]
        seq_len        int32   min(hist_end, max_seq_len): what a model sees
        last_beh_time  int64   time of the latest behaviour before the impression, -1 if none
    histories         one row per user: the user's whole time-sorted behaviour list (CSR
                      once concatenated: offsets = cumsum of n_behaviors)
        user_id, user_idx, n_behaviors (int32), n_train_behaviors (int32: behaviours from
        training-split impressions, what pretraining may see), item_seq, cate_seq
        (array<int32> of indices), time_seq (array<int64>)
    items             item_id, item_idx, category_id, cate_idx, price (mean)
    vocab/user, vocab/item, vocab/category     raw_id int64 -> idx int32 (idx >= 2)
    feast/user_behavior_seq   user_id, event_timestamp, item_seq, cate_seq (array<int64> raw
                              ids, last max_seq_len behaviours, oldest first), seq_len
    feast/item_features       item_id, event_timestamp, category_id, price
    stats.json        row counts per split, click rates, vocabulary sizes, max_seq_len
"""
from __future__ import annotations

from pathlib import Path

PAD = 0  # index of padding in every vocabulary
OOV = 1  # index of out-of-vocabulary values
FIRST_ID = 2  # first index given to a real value

SPLITS = ("train", "valid", "test")


class BuildLayout:
    """Paths inside one feature build directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def samples(self, split: str) -> Path:
        return self.root / "samples" / split

    @property
    def histories(self) -> Path:
        return self.root / "histories"

    @property
    def items(self) -> Path:
        return self.root / "items"

    def vocab(self, name: str) -> Path:
        return self.root / "vocab" / name

    @property
    def feast_user(self) -> Path:
        return self.root / "feast" / "user_behavior_seq"

    @property
    def feast_item(self) -> Path:
        return self.root / "feast" / "item_features"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"
