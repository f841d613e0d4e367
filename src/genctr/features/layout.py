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
        user_id, user_idx, n_behaviors (int32), n_train_behaviors (int32: behaviours of the
        training period, what pretraining may see: always a prefix of the list), item_seq,
        cate_seq (array<int32> of indices), time_seq (array<int64>)
    items             item_id, item_idx, category_id, cate_idx, price (mean)
    vocab/user, vocab/item, vocab/category     raw_id int64 -> idx int32 (idx >= 2)
    feast/user_behavior_seq   user_id, event_timestamp, item_seq, cate_seq (array<int64> raw
                              ids, last max_seq_len behaviours, oldest first), seq_len
    feast/item_features       item_id, event_timestamp, category_id, price
    stats.json        row counts per split, click rates, vocabulary sizes, max_seq_len

Details the Spark build (``genctr.features.spark_build``) guarantees:

* Splits are per user and time-ordered: a user's n impressions sorted by (event_time,
  request_id) are train up to rank max(1, floor(n * f_train)), valid up to rank
  max(that, floor(n * (f_train + f_valid))), test after. Every user has a training row,
  so every user is in the user vocabulary and no sample has user_idx = OOV.
* Vocabularies are fitted on the training period: frequency desc, then raw id asc. Without
  a log that is the training split; with one, also the log's training-period rows (so an
  item only the log has gets an index); nothing of the valid/test periods enters one.
* Behaviours are the clicked impressions of all splits, sorted by (event_time, request_id);
  ``hist_end`` counts those with event_time strictly below the impression's (equal times
  do not count), so ``time_seq[hist_end - 1] < event_time <= time_seq[hist_end]``.
  A click is a training behaviour when its impression is in the training split.
* With a behaviour log (an optional input, ``genctr.data.behaviours``: user_id, item_id,
  category_id, event_time, event_type; the rules: ``genctr.features.spark_log_ops``) the
  behaviours are the clicks plus the log rows of users that have impressions, a log row with
  the (user_id, item_id, event_time) of a click being that click and log rows sharing one
  such key counting once; they sort by (event_time, clicks before log rows, request_id /
  item_id), and ``hist_end``, ``seq_len``, ``last_beh_time``, ``n_behaviors`` and Feast's
  sequences all count this union.
  A log row is a training behaviour when its event_time is <= its user's last training
  impression time and < the user's first valid/test impression time; so the training
  behaviours are a prefix of each list and no valid/test-period behaviour is one.
* ``histories`` is one Parquet file in user_idx order; user_idx runs 2, 3, ... without
  gaps, so row r is the user with user_idx r + 2. Users without behaviours have empty
  (never null) arrays. Sample rows are in no particular order.
* ``items`` lists every item of any split (sorted by item_idx, item_id); items unseen in
  training share item_idx = OOV. Its category is that of the item's latest impression. With a
  log, also the items only the log has: category of the latest log row, price 0.0, first
  seen (Feast's timestamp) at the first log row.
* ``feast/user_behavior_seq.event_timestamp`` is the time of the last behaviour (the last
  impression for users without behaviours); ``feast/item_features.event_timestamp`` is the
  item's first impression. Both are UTC timestamps (Parquet INT64 microseconds).
* ``stats.json`` keys: format_version, max_seq_len, split_fractions, n_events,
  n_behaviors, n_users, n_items, vocab_counts {user, item, category} (real ids),
  vocab_sizes {user, item, category} (embedding rows: vocab_counts + 2 for padding and
  OOV), splits {train|valid|test: {rows, clicks, click_rate, mean_seq_len}}. With a log
  also behaviour_log {rows, used, dropped_unknown_user, duplicates_of_clicks,
  duplicates_in_log} (each log row in exactly one of the last four) and n_behaviors =
  clicks + used; without one, no behaviour_log key (the build is what it was before logs).
* A build is written to a hidden sibling directory and renamed onto its final path only
  when complete.
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
