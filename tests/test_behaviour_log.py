"""The optional behaviour log: validation, the adapters, export, and the Spark build with a log.

A hand-made tiny case pins every rule (boundaries of the training period, dedupe, unknown users,
vocabularies, items, Feast); a seeded random case is checked against a pandas reference of the
same rules; a log that only repeats the clicks builds exactly what no log builds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from genctr.config import DataConfig, FeatureConfig
from genctr.data.behaviours import arrow_schema, behaviours_path, conform_behaviours
from genctr.errors import ConfigError, DataValidationError
from genctr.features.layout import OOV, BuildLayout
from genctr.features.spark_build import build_features

T0 = 1_600_000_000
EVENT_COLUMNS = ["request_id", "user_id", "item_id", "category_id", "event_time", "clicked"]
LOG_COLUMNS = ["user_id", "item_id", "category_id", "event_time", "event_type"]
# split (0.5, 0.25, 0.25). User 10: train r1, r2 (until t=200), valid r3 (from t=300), test r4.
# User 20: train r5 (t=100), test r6 (t=150). User 30: r7 and r8 tie at t=100: r7 train, r8 test,
# so its training period ends at 100 and its held-out period starts at 100.
EVENTS = [(1, 10, 100, 7, 100, 1), (2, 10, 101, 7, 200, 0), (3, 10, 102, 8, 300, 1), (4, 10, 103, 8, 400, 0),
          (5, 20, 101, 7, 100, 1), (6, 20, 100, 7, 150, 0),
          (7, 30, 102, 8, 100, 0), (8, 30, 103, 8, 100, 1)]
LOG = [
    (10, 500, 60, 50, "cart"),     # L1 before any impression: training period; item 500 only in the log
    (10, 100, 7, 100, "rating"),   # L2 = click r1: a duplicate, dropped
    (10, 501, 61, 200, "fav"),     # L3 at the last training time (200 <= 200 < 300): training period
    (10, 502, 62, 250, "cart"),    # L4 after the last training impression, before valid: NOT training
    (10, 503, 63, 300, "cart"),    # L5 at the first valid time: NOT training
    (10, 503, 63, 300, "fav"),     # L6 same user, item, time as L5: one behaviour ("cart" < "fav" is kept)
    (10, 100, 7, 500, "buy"),      # L7 after every impression: in the history, never counted by hist_end
    (20, 504, 64, 100, "cart"),    # L8 at the training end of user 20 (100 <= 100 < 150): training period
    (30, 505, 65, 100, "cart"),    # L9 t = 100 = user 30's first test time: NOT training (equal is held out)
    (30, 506, 66, 90, "cart"),     # L10 strictly before both: training period
    (99, 507, 67, 100, "cart"),    # L11 a user without impressions: dropped
]
CFG = FeatureConfig(max_seq_len=3, split=(0.5, 0.25, 0.25), shuffle_partitions=2)


def events_frame(rows: list[tuple[int, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS).astype("int64")
    df["clicked"] = df["clicked"].astype("int8")
    df["event_time"] += T0
    df["price"] = 1.0
    return df


def log_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=LOG_COLUMNS)
    df["event_time"] = df["event_time"].astype("int64") + T0
    return df


def read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def samples(lay: BuildLayout) -> pd.DataFrame:
    return pd.concat([read(lay.samples(s)).assign(split=s) for s in ("train", "valid", "test")]).set_index("sample_id")


def vocab(lay: BuildLayout, kind: str) -> dict[int, int]:
    v = read(lay.vocab(kind))
    return dict(zip(v["raw_id"].tolist(), v["idx"].tolist(), strict=True))


@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory) -> tuple[BuildLayout, dict]:
    root = tmp_path_factory.mktemp("tiny_log")
    events_frame(EVENTS).to_parquet(root / "events.parquet")
    log_frame(LOG).to_parquet(root / "log.parquet")
    stats = build_features(root / "events.parquet", root / "build", CFG, spark=spark, behaviours=root / "log.parquet")
    return BuildLayout(root / "build"), stats


# ----------------------------------------------------------------------------- the hand-made case
def test_tiny_histories_are_clicks_and_log_rows_in_time_order(tiny) -> None:
    lay, _ = tiny
    h = read(lay.histories).set_index("user_id")
    items = {v: k for k, v in vocab(lay, "item").items()}
    raw = {u: [items.get(i, "oov") for i in h.loc[u, "item_seq"]] for u in (10, 20, 30)}
    # user 10: L1, r1 (L2 folded into it), L3, L4, r3 then L5 at the same second (clicks first), L7
    assert raw == {10: [500, 100, 501, "oov", 102, "oov", 100], 20: [101, 504], 30: [506, "oov", "oov"]}
    assert [list(t - T0) for t in h.loc[[10, 20, 30], "time_seq"]] == [
        [50, 100, 200, 250, 300, 300, 500], [100, 100], [90, 100, 100]]
    assert h.loc[[10, 20, 30], "n_behaviors"].tolist() == [7, 2, 3]


def test_tiny_training_period_stops_at_both_boundaries(tiny) -> None:
    lay, _ = tiny
    h = read(lay.histories).set_index("user_id")
    # user 10: L1, r1, L3 (t = last training time) count; L4 (between train and valid) and L5 (t = first
    # valid time) do not. User 20: r5 and L8 (t = last training time, < first test). User 30: L10 only:
    # L9 shares its time with the first test impression, and the test click r8 is never training.
    assert h.loc[[10, 20, 30], "n_train_behaviors"].tolist() == [3, 2, 1]


def test_tiny_held_out_targets_are_the_valid_period_behaviours_log_rows_included(tiny) -> None:
    """Pretraining's held-out next-item targets: every behaviour after the training prefix and
    before the user's first test impression, not only the valid impressions' clicks."""
    from genctr.training.data import FeatureData

    lay, _ = tiny
    data = FeatureData(str(lay.root), 3)
    got = dict(zip(data._user_index, data.valid_behaviours().tolist(), strict=True))
    # user 10: L4 (250), r3 and L5 (300) precede the test impression at 400 (clicks alone: r3 only);
    # user 20: its test impression (150) follows both training behaviours; user 30: nothing before 100
    assert got == {10: 3, 20: 0, 30: 0}
    ends, lengths, target_from = data.heldout_windows()
    first = data._user_start[list(data._user_index).index(10)]
    targets = {int(e) - first - (int(n) - int(f)) + k for e, n, f in zip(ends, lengths, target_from, strict=True)
               for k in range(int(n) - int(f))}
    assert targets == {3, 4, 5}  # user-local positions: L4, r3, L5; never a training behaviour, never L7


def test_tiny_pointers_count_behaviours_strictly_before(tiny) -> None:
    lay, _ = tiny
    s = samples(lay)
    got = {i: (r.split, r.hist_end, r.seq_len, r.last_beh_time - T0 if r.last_beh_time >= 0 else -1)
           for i, r in s.iterrows()}
    assert got == {
        1: ("train", 1, 1, 50),    # L1
        2: ("train", 2, 2, 100),   # L1, r1 (the duplicate L2 is not counted twice)
        3: ("valid", 4, 3, 250),   # + L3, L4; L5 at the same second is not earlier
        4: ("test", 6, 3, 300),    # + r3, L5 (L6 folded into L5); L7 is later
        5: ("train", 0, 0, -1),    # L8 shares its second
        6: ("test", 2, 2, 100),
        7: ("train", 1, 1, 90),    # L10
        8: ("test", 1, 1, 90),     # r7 is no click; r8 itself and L9 share its second
    }


def test_tiny_vocabularies_take_training_log_rows_and_nothing_later(tiny) -> None:
    lay, _ = tiny
    # training rows: r1, r2, r5, r7 and the log's L1, L3, L8, L10; frequency desc, then raw id
    assert vocab(lay, "item") == {101: 2, 100: 3, 102: 4, 500: 5, 501: 6, 504: 7, 506: 8}
    assert vocab(lay, "user") == {10: 2, 20: 3, 30: 4}  # user 10: 2 impressions + 2 log rows; 99 dropped
    assert vocab(lay, "category") == {7: 2, 8: 3, 60: 4, 61: 5, 64: 6, 66: 7}
    held_out = {103, 502, 503, 505, 507}  # only in valid/test impressions or held-out log rows
    assert not held_out & set(vocab(lay, "item"))


def test_tiny_items_feast_and_stats(tiny) -> None:
    lay, stats = tiny
    items = read(lay.items).set_index("item_id")
    assert sorted(items.index) == [100, 101, 102, 103, 500, 501, 502, 503, 504, 505, 506]  # not 507
    assert items.loc[500, ["item_idx", "category_id", "cate_idx", "price"]].tolist() == [5, 60, 4, 0.0]
    assert items.loc[502, ["item_idx", "cate_idx"]].tolist() == [OOV, OOV]
    assert items.loc[101, "price"] == 1.0  # impression items keep their impressions' mean price
    f = read(lay.feast_user).set_index("user_id")
    assert [list(x) for x in f.loc[[10, 20, 30], "item_seq"]] == [[102, 503, 100], [101, 504], [506, 103, 505]]
    assert [list(x) for x in f.loc[[10, 20, 30], "cate_seq"]] == [[8, 63, 7], [7, 64], [66, 8, 65]]
    assert int(f.loc[10, "event_timestamp"].timestamp()) - T0 == 500  # the last behaviour: L7, a log row
    assert stats["behaviour_log"] == {"rows": 11, "used": 8, "dropped_unknown_user": 1,
                                      "duplicates_of_clicks": 1, "duplicates_in_log": 1}
    assert stats["n_behaviors"] == 4 + 8 == int(read(lay.histories)["n_behaviors"].sum())
    assert json.loads(lay.stats.read_text()) == stats
    assert stats["n_items"] == 11 and stats["n_events"] == len(EVENTS)


# ----------------------------------------------------------------------------- a reference implementation
def reference(events: pd.DataFrame, log: pd.DataFrame, split: tuple[float, float, float]) -> dict[str, object]:
    """The rules of genctr.features.spark_log_ops, row by row in pandas."""
    ev = events.sort_values(["user_id", "event_time", "request_id"]).copy()
    ev["rank"] = ev.groupby("user_id").cumcount() + 1
    n = ev.groupby("user_id")["rank"].transform("size")
    c1 = np.maximum(1, np.floor(n * split[0] + 1e-9))
    c2 = np.maximum(c1, np.floor(n * (split[0] + split[1]) + 1e-9))
    ev["split"] = np.where(ev["rank"] <= c1, "train", np.where(ev["rank"] <= c2, "valid", "test"))
    train_until = ev[ev.split == "train"].groupby("user_id")["event_time"].max()
    heldout_from = ev[ev.split != "train"].groupby("user_id")["event_time"].min()
    clicks = ev[ev.clicked == 1]
    click_keys = set(zip(clicks.user_id, clicks.item_id, clicks.event_time, strict=True))
    lg = log[log.user_id.isin(set(ev.user_id))]
    lg = lg[[k not in click_keys for k in zip(lg.user_id, lg.item_id, lg.event_time, strict=True)]]
    lg = lg.sort_values(["event_type", "category_id"]).drop_duplicates(["user_id", "item_id", "event_time"])
    until, start = lg.user_id.map(train_until), lg.user_id.map(heldout_from)
    log_train = (lg.event_time <= until) & (start.isna() | (lg.event_time < start))
    beh = pd.concat([
        pd.DataFrame({"user_id": clicks.user_id, "item_id": clicks.item_id, "category_id": clicks.category_id,
                      "t": clicks.event_time, "src": 0, "key": clicks.request_id,
                      "train": clicks.split == "train"}),
        pd.DataFrame({"user_id": lg.user_id, "item_id": lg.item_id, "category_id": lg.category_id,
                      "t": lg.event_time, "src": 1, "key": lg.item_id, "train": log_train}),
    ]).sort_values(["user_id", "t", "src", "key"])
    hist = {u: g for u, g in beh.groupby("user_id")}
    hist_end = {r.request_id: int((hist[r.user_id].t < r.event_time).sum()) if r.user_id in hist else 0
                for r in ev.itertuples()}
    vocab_rows = pd.concat([ev[ev.split == "train"][["user_id", "item_id", "category_id"]],
                            beh[(beh.src == 1) & beh.train][["user_id", "item_id", "category_id"]]])
    item_counts = vocab_rows.item_id.value_counts()
    order = sorted(item_counts.index, key=lambda i: (-item_counts[i], i))
    return {"hist": hist, "hist_end": hist_end, "split": dict(zip(ev.request_id, ev.split, strict=True)),
            "item_vocab": {int(i): k + 2 for k, i in enumerate(order)}, "used": len(lg)}


def random_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events with many equal times and a log holding copies of clicks, same-second repeats with
    another type, log-only items, times at the users' boundaries and unknown users."""
    rng = np.random.default_rng(seed)
    n = 900
    ev = pd.DataFrame({"request_id": rng.permutation(n).astype("int64") + 1,
                       "user_id": rng.integers(1, 31, n), "item_id": rng.integers(1, 40, n),
                       "event_time": T0 + rng.integers(0, 30, n), "clicked": (rng.random(n) < 0.4).astype("int8")})
    ev["category_id"] = ev["item_id"] % 5
    m = 700
    log = pd.DataFrame({"user_id": rng.integers(1, 34, m),  # users 31..33 have no impressions
                        "item_id": rng.integers(1, 60, m),  # items 40..59 only in the log
                        "event_time": T0 + rng.integers(0, 32, m),
                        "event_type": rng.choice(["cart", "fav", "buy"], m)})
    log["category_id"] = log["item_id"] % 5 + 10 * (log["item_id"] >= 40)
    copies = ev[ev.clicked == 1].sample(60, random_state=seed)[["user_id", "item_id", "category_id", "event_time"]]
    log = pd.concat([log, copies.assign(event_type="rating")], ignore_index=True)
    return ev[EVENT_COLUMNS], log.drop_duplicates(["user_id", "item_id", "event_time", "event_type"])[LOG_COLUMNS]


@pytest.fixture(scope="module")
def random_build(spark, tmp_path_factory) -> tuple[BuildLayout, dict, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("random_log")
    ev, log = random_case(seed=5)
    ev.to_parquet(root / "events.parquet")
    log.to_parquet(root / "log.parquet")
    cfg = FeatureConfig(max_seq_len=6, split=(0.6, 0.2, 0.2), shuffle_partitions=2)
    stats = build_features(root / "events.parquet", root / "build", cfg, spark=spark, behaviours=root / "log.parquet")
    return BuildLayout(root / "build"), stats, ev, log


def test_a_random_build_follows_the_reference(random_build) -> None:
    lay, stats, ev, log = random_build
    ref = reference(ev, log, (0.6, 0.2, 0.2))
    assert ref["used"] > 50 and stats["behaviour_log"]["duplicates_of_clicks"] >= 60  # the case exercises it
    assert vocab(lay, "item") == ref["item_vocab"]
    h = read(lay.histories)
    item_vocab = vocab(lay, "item")
    for row in h.itertuples():
        want = ref["hist"].get(row.user_id)
        if want is None:
            assert row.n_behaviors == 0
            continue
        assert list(row.time_seq) == want.t.tolist(), row.user_id
        assert list(row.item_seq) == [item_vocab.get(i, OOV) for i in want.item_id], row.user_id
        train = want.train.to_numpy()
        k = int(train.sum())
        assert train[:k].all() and not train[k:].any(), row.user_id  # training behaviours: a prefix
        assert row.n_train_behaviors == k, row.user_id
    s = samples(lay)
    assert s["hist_end"].to_dict() == ref["hist_end"]
    assert s["split"].to_dict() == ref["split"]
    assert stats["n_behaviors"] == int(h["n_behaviors"].sum()) == int(ev.clicked.sum()) + ref["used"]
    assert stats["behaviour_log"]["dropped_unknown_user"] == int((log.user_id > 30).sum())
    assert stats["behaviour_log"]["rows"] == len(log)


def test_no_held_out_behaviour_is_training_behaviour(random_build) -> None:
    """Every behaviour inside the first n_train_behaviors is no later than the user's last training
    impression and earlier than its first valid/test impression, except training clicks that share
    that impression's second (a tie the split breaks by request_id): never a log row."""
    lay, _, _, _ = random_build
    s = samples(lay)
    h = read(lay.histories)
    edges = 0
    for row in h.itertuples():
        mine = s[s.user_id == row.user_id]
        train_until = mine[mine.split == "train"].event_time.max()
        held = mine[mine.split != "train"].event_time
        times = np.asarray(row.time_seq)[: row.n_train_behaviors]
        assert (times <= train_until).all(), row.user_id
        if len(held):
            first = held.min()
            train_clicks_there = ((mine.split == "train") & (mine.label == 1) & (mine.event_time == first)).sum()
            assert (times <= first).all() and (times == first).sum() <= train_clicks_there, row.user_id
            edges += int((times == first).sum())
    assert edges  # the seeded case has such a tie


def test_a_log_that_only_repeats_the_clicks_changes_nothing_but_stats(spark, tmp_path_factory, tmp_path) -> None:
    """MovieLens' log repeats every clicked rating: those rows are the clicks, not new behaviours.
    Compared with the session's shared build of the same events without a log (tests/build_fixtures)."""
    from build_compare import TABLE_KEYS, read_table
    from build_fixtures import MAX_SEQ_LEN, shared_build, tiny_events

    plain = shared_build(tmp_path_factory, spark)
    ev = tiny_events()
    log = ev[ev.clicked == 1].drop_duplicates(["user_id", "item_id", "event_time"]).assign(event_type="rating")
    ev.to_parquet(tmp_path / "events.parquet")
    log[LOG_COLUMNS].to_parquet(tmp_path / "log.parquet")
    cfg = FeatureConfig(max_seq_len=MAX_SEQ_LEN, shuffle_partitions=2)
    logged = build_features(tmp_path / "events.parquet", tmp_path / "logged", cfg, spark=spark,
                            behaviours=tmp_path / "log.parquet")
    for rel, keys in TABLE_KEYS.items():
        a, b = read_table(tmp_path / "logged" / rel), read_table(plain / rel)
        assert a.schema.equals(b.schema), rel
        sort = [(k, "ascending") for k in keys]
        assert a.sort_by(sort).equals(b.sort_by(sort)), rel
    assert read_table(tmp_path / "logged" / "histories").equals(read_table(plain / "histories"))  # row order too
    assert logged.pop("behaviour_log") == {"rows": len(log), "used": 0, "dropped_unknown_user": 0,
                                           "duplicates_of_clicks": len(log), "duplicates_in_log": 0}
    assert logged == json.loads(BuildLayout(plain).stats.read_text())


# ----------------------------------------------------------------------------- bad logs
@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.drop(columns="event_type"), "missing required column(s) ['event_type']"),
    (lambda d: d.assign(item_id=d["item_id"].astype(float).where(d.index != 2, 500.5)),
     "column 'item_id' must hold integers"),
    (lambda d: d.assign(event_type=d["event_type"].where(d.index != 1, "  ")), "'event_type' must not be empty"),
    (lambda d: d.assign(event_type=d["event_type"].where(d.index != 1, None)), "null values in {'event_type': 1}"),
    (lambda d: d.assign(event_type=[3] * len(d)), "'event_type' has type bigint"),
    (lambda d: d.assign(event_time=d["event_time"] * 1000), "look like milliseconds"),
    (lambda d: pd.concat([d, d.iloc[[4]]]), "must be unique on ['user_id', 'item_id', 'event_time', 'event_type']"),
])
def test_a_bad_log_fails_the_build_before_anything_is_written(spark, tmp_path: Path, mutate, needle: str) -> None:
    events_frame(EVENTS).to_parquet(tmp_path / "events.parquet")
    mutate(log_frame(LOG)).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(DataValidationError, match="behaviour log at") as err:
        build_features(tmp_path / "events.parquet", tmp_path / "build", CFG, spark=spark,
                       behaviours=tmp_path / "log.parquet")
    assert needle in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "log.parquet"]  # no build, no temp


def test_a_missing_log_fails_before_spark_starts(tmp_path: Path) -> None:
    events_frame(EVENTS).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(DataValidationError, match="behaviour log path .*nope.parquet does not exist"):
        build_features(tmp_path / "events.parquet", tmp_path / "build", CFG, spark=None,
                       behaviours=tmp_path / "nope.parquet")


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.drop(columns="category_id"), "lacks required column(s) ['category_id']"),
    (lambda d: d.assign(user_id=[1.5] + [1.0] * (len(d) - 1)), "'user_id' must hold integers, found 1.5"),
    (lambda d: d.assign(item_id=[None] + [1] * (len(d) - 1)), "'item_id' has 1 null"),
    (lambda d: d.assign(event_type=[""] + ["x"] * (len(d) - 1)), "'event_type' must not be empty"),
    (lambda d: d.assign(event_type=["\t "] + ["x"] * (len(d) - 1)), "'event_type' must not be empty"),
    (lambda d: d.assign(event_type=[7] + ["x"] * (len(d) - 1)), "'event_type' must hold strings"),
    (lambda d: d.assign(event_type=[None] + ["x"] * (len(d) - 1)), "'event_type' has 1 null"),
    (lambda d: d.assign(event_type=["x" * 65] + ["x"] * (len(d) - 1)), "at most 64 characters"),
    (lambda d: d.assign(event_time=d["event_time"] * 1000), "milliseconds"),
    (lambda d: pd.concat([d, d.iloc[[4]]], ignore_index=True), "user_id=10, item_id=503"),
])
def test_conform_behaviours_names_the_problem(mutate, needle: str) -> None:
    with pytest.raises(DataValidationError) as err:
        conform_behaviours(mutate(log_frame(LOG)), source="log")
    assert needle in str(err.value) and str(err.value).startswith("log: ")


def test_conform_behaviours_keeps_values_exactly() -> None:
    raw = log_frame(LOG).assign(user_id=lambda d: d["user_id"].astype(str), extra=1)
    raw["event_time"] = pd.to_datetime(raw["event_time"], unit="s", utc=True).astype(str)  # ISO-8601 strings
    out = conform_behaviours(raw)
    assert list(out.columns) == LOG_COLUMNS and out["user_id"].dtype == np.int64
    assert out["user_id"].tolist() == [r[0] for r in LOG] and out["event_type"].tolist() == [r[4] for r in LOG]
    assert (out["event_time"] - T0).tolist() == [r[3] for r in LOG]
    same_second = log_frame([(1, 2, 3, 10, "cart"), (1, 2, 3, 10, "fav")])  # told apart by type: both kept
    assert len(conform_behaviours(same_second)) == 2


# ----------------------------------------------------------------------------- adapters and export
def test_movielens_log_is_every_rating_and_the_impressions_do_not_change() -> None:
    from genctr.data.sources import load_events, load_source

    plain = load_events(DataConfig(source="movielens"))
    events, log = load_source(DataConfig(source="movielens", behaviour_log=True))
    assert log is not None and len(log) == len(events) == 100_836  # ratings.csv
    pd.testing.assert_frame_equal(events, plain)
    assert set(log["event_type"]) == {"rating"}
    keys = ["user_id", "item_id", "category_id", "event_time"]
    pd.testing.assert_frame_equal(log[keys], events[keys])  # row for row: the clicked ones repeat the clicks
    assert load_source(DataConfig(source="movielens"))[1] is None


def test_taobao_cart_fav_buy_rows_become_the_log(tmp_path: Path) -> None:
    from genctr.data.sources.taobao import load_taobao, taobao_source

    csv = tmp_path / "UserBehavior.csv"
    csv.write_text("1,100,7,pv,1511544070\n1,101,8,buy,1511544080\n1,101,8,cart,1511544075\n"
                   "2,102,7,pv,1511544090\n2,103,9,fav,1511544100\n2,103,9,fav,1511544100\n2,103,9,pv,1511544101\n")
    events, log = taobao_source(csv, negatives_per_click=2, seed=4, behaviour_log=True)
    pd.testing.assert_frame_equal(events, load_taobao(csv, negatives_per_click=2, seed=4))  # impressions unchanged
    assert len(events) == 3 * 3 and events["clicked"].sum() == 3
    assert log is not None
    got = sorted(map(tuple, log[LOG_COLUMNS].itertuples(index=False)))
    assert got == [(1, 101, 8, 1511544075, "cart"), (1, 101, 8, 1511544080, "buy"),
                   (2, 103, 9, 1511544100, "fav")]  # the exact repeat counts once; no pv row
    assert taobao_source(csv, behaviour_log=False)[1] is None


def test_sources_without_a_log_refuse_the_option() -> None:
    with pytest.raises(ConfigError, match="data.behaviour_log: source 'synthetic' has no behaviour log"):
        DataConfig(source="synthetic", behaviour_log=True)
    with pytest.raises(ConfigError, match="data.behaviour_path applies to source 'events' only"):
        DataConfig(source="movielens", behaviour_log=True, behaviour_path="x.parquet")
    with pytest.raises(ConfigError, match="data.behaviour_log must be true or false"):
        DataConfig(behaviour_log="yes")  # type: ignore[arg-type]  # the wrong type is the test


def test_export_writes_the_log_beside_the_events_and_reads_it_back(tmp_path: Path) -> None:
    from genctr.data.export import export_events
    from genctr.data.sources import load_source

    out = tmp_path / "ml.parquet"
    export_events(DataConfig(source="movielens", behaviour_log=True), out)
    log_file = tmp_path / "ml.behaviours.parquet"
    assert Path(behaviours_path(out)) == log_file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml.behaviours.parquet", "ml.parquet"]  # no temp left
    table = pq.read_table(log_file)
    assert table.schema.equals(arrow_schema()) and table.num_rows == 100_836
    # the canonical source finds it beside its events, or where behaviour_path says
    events, log = load_source(DataConfig(source="events", path=str(out), behaviour_log=True))
    assert log is not None and len(log) == 100_836 and len(events) == 100_836
    with pytest.raises(ConfigError, match="already exists"):
        export_events(DataConfig(source="movielens", behaviour_log=True), tmp_path / "other.parquet",
                      behaviours_out=log_file, overwrite=False)
    assert not (tmp_path / "other.parquet").exists()
    alone = tmp_path / "alone" / "events.parquet"
    alone.parent.mkdir()
    events_frame(EVENTS).to_parquet(alone)
    with pytest.raises(DataValidationError, match=r"behaviour log file .*alone/events.behaviours.parquet not "
                                                  r"found \(the default beside data.path; .* data.behaviour_path"):
        load_source(DataConfig(source="events", path=str(alone), behaviour_log=True))
    # events exported again without the log: the old log described other events and goes
    export_events(DataConfig(source="movielens"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "ml.parquet"]


def test_a_failed_log_write_leaves_neither_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq_module

    from genctr.data.export import export_events

    real = pq_module.write_table

    def half_then_fail(table, where, **kw):
        real(table.slice(0, 10), where, **kw)  # a partial file at the temporary name
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq_module, "write_table", half_then_fail)
    with pytest.raises(ConfigError, match="cannot write output .*ml.behaviours.parquet: No space left"):
        export_events(DataConfig(source="movielens", behaviour_log=True), tmp_path / "ml.parquet")
    assert list(tmp_path.iterdir()) == []  # the log's temporary is gone and the events were never written


def test_cli_options_reach_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from genctr.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "export", "--behaviour-log", "--out", str(tmp_path / "ml.parquet")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "ml.parquet"), str(tmp_path / "ml.behaviours.parquet")]
    result = runner.invoke(app, ["data", "export", "--source", "synthetic", "--behaviour-log",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "data.behaviour_log" in result.output
    seen: dict[str, object] = {}

    def fake_build(events, out, cfg, spark=None, behaviours=None):
        seen.update(events=events, behaviours=behaviours)
        return {"splits": {}, "n_events": 0, "n_users": 0, "n_items": 0, "behaviour_log": {"used": 0}}

    monkeypatch.setattr("genctr.features.spark_build.build_features", fake_build)
    result = runner.invoke(app, ["features", "build", "--events", "e.parquet", "--out", str(tmp_path / "b"),
                                 "--behaviours", "e.behaviours.parquet"])
    assert result.exit_code == 0, result.output
    assert seen == {"events": "e.parquet", "behaviours": "e.behaviours.parquet"}
    assert json.loads(result.stdout)["behaviour_log"] == {"used": 0}
    for cmd, option in ((["data", "export"], "--behaviour-log"), (["features", "build"], "--behaviours")):
        assert option in runner.invoke(app, [*cmd, "--help"]).output


def test_spark_submit_and_the_operator_pass_the_log_on() -> None:
    from genctr.features.spark_application import FeatureBuildApp
    from genctr.features.spark_build import parser

    args = parser().parse_args(["--events", "e", "--out", "o", "--behaviours", "b"])
    assert args.behaviours == "b" and parser().parse_args(["--events", "e", "--out", "o"]).behaviours is None
    app = FeatureBuildApp(events="s3://x/e", out="s3://x/o", behaviours="s3://x/b")
    assert app.arguments()[-2:] == ["--behaviours", "s3://x/b"]
    assert "--behaviours" not in FeatureBuildApp(events="s3://x/e", out="s3://x/o").arguments()
    with pytest.raises(ConfigError, match="behaviours must be an object-store URI"):
        FeatureBuildApp(events="s3://x/e", out="s3://x/o", behaviours="/local/b")


def test_the_build_component_passes_a_log_with_rows_and_drops_an_empty_one(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp.dsl import Dataset

    import components
    from genctr.data.behaviours import empty_behaviours, write_behaviours

    seen: list[object] = []

    def fake_build(events, out, cfg, spark=None, behaviours=None):
        seen.append(behaviours)
        return {"splits": {}}

    monkeypatch.setattr("genctr.features.spark_build.build_features", fake_build)
    full, empty = tmp_path / "full.parquet", tmp_path / "empty.parquet"
    write_behaviours(conform_behaviours(log_frame(LOG)), full)
    write_behaviours(empty_behaviours(), empty)
    for log in (full, empty, None):
        build = Dataset(name="build", uri=str(tmp_path / "build"), metadata={})
        components.build_features.python_func(events=Dataset(name="events", uri=str(tmp_path / "e.parquet")),
                                              build=build, behaviours=None if log is None else Dataset(uri=str(log)))
    assert seen == [str(full), None, None]  # an empty log (a source without one) builds what no log builds
