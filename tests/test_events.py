"""Canonical events: validation of bad input, and the three source adapters."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genctr.config import DataConfig, FeatureConfig, from_dict
from genctr.data.schema import conform_events
from genctr.data.sources import load_events
from genctr.data.sources.synthetic import SyntheticConfig, SyntheticWorld, iter_events, write_events
from genctr.data.sources.taobao import load_taobao
from genctr.errors import ConfigError, DataValidationError


def good_events(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": np.arange(n), "user_id": [1, 1, 2, 2, 3, 3][:n], "item_id": np.arange(n) + 10,
        "category_id": [5] * n, "event_time": np.arange(n) + 1_600_000_000, "clicked": [0, 1] * (n // 2),
    })


def test_good_events_are_coerced_and_defaults_filled() -> None:
    df = good_events().assign(event_time=pd.date_range("2021-01-01", periods=6, freq="h").astype(str))
    out = conform_events(df)
    assert out["event_time"].iloc[0] == 1_609_459_200
    assert out["price"].tolist() == [0.0] * 6 and out["position"].dtype == np.int32
    assert out["clicked"].dtype == np.int8


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.drop(columns="item_id"), "missing required column(s) ['item_id']"),
        (lambda d: d.assign(clicked=[0, 1, 2, 0, 1, 0]), "'clicked' must be 0 or 1, found 2"),
        (lambda d: d.assign(user_id=[1, None, 2, 2, 3, 3]), "'user_id' has 1 null"),
        (lambda d: d.assign(item_id=["a", "b", "c", "d", "e", "f"]), "'item_id' must hold integers, found 'a'"),
        (lambda d: d.assign(event_time=["2021-01-01", "yesterday", "2021-01-02", "2021-01-02", "2021-01-03", "x"]),
         "unparseable timestamp 'yesterday'"),
        (lambda d: d.assign(request_id=[1, 1, 2, 3, 4, 5]), "'request_id' must be unique, 1 repeats"),
        (lambda d: d.assign(price=["1", "cheap", "1", "1", "1", "1"]), "'price' must be numeric"),
    ],
)
def test_bad_events_name_the_problem(mutate, needle: str) -> None:
    with pytest.raises(DataValidationError) as err:
        conform_events(mutate(good_events()))
    assert needle in str(err.value)


def test_movielens_adapter_matches_the_dataset() -> None:
    ev = load_events(DataConfig(source="movielens"))
    assert len(ev) == 100_836 and ev["user_id"].nunique() == 610
    assert 0.47 < ev["clicked"].mean() < 0.49  # rating >= 4
    assert 900 < ev["category_id"].nunique() < 1000
    coarse = load_events(DataConfig(source="movielens", category="first"))
    assert coarse["category_id"].nunique() < 25


def test_taobao_adapter_pairs_clicks_with_negatives(tmp_path) -> None:
    csv = tmp_path / "UserBehavior.csv"
    csv.write_text("1,100,7,pv,1511544070\n1,101,8,buy,1511544080\n2,102,7,pv,1511544090\n2,103,9,pv,1511544100\n")
    ev = load_taobao(csv, negatives_per_click=2)
    assert len(ev) == 3 * 3 and ev["clicked"].sum() == 3  # buy rows are not impressions
    assert set(ev.loc[ev.clicked == 0, "item_id"]) <= {100, 102, 103}
    bad = tmp_path / "bad.csv"
    bad.write_text("1,100,7,click,1511544070\n")
    with pytest.raises(DataValidationError, match="unknown behavior"):
        load_taobao(bad)


def test_synthetic_world_is_seeded_chunked_and_sequence_dependent(tmp_path) -> None:
    cfg = SyntheticConfig(n_users=300, n_items=800, n_cates=20, seed=3)
    a = pd.concat(list(iter_events(cfg, 5_000, chunk_rounds=2)))
    b = pd.concat(list(iter_events(cfg, 5_000, chunk_rounds=5)))
    assert len(a) == 5_000
    np.testing.assert_array_equal(a["clicked"].to_numpy(), b["clicked"].to_numpy())
    assert a["request_id"].is_unique
    assert (a.groupby("user_id")["event_time"].diff().dropna() > 0).all()  # time moves forward per user
    conform_events(a.drop(columns="true_ctr"))
    # the click model depends on behaviour: a user's recent clicks raise p for similar items
    world = SyntheticWorld(cfg)
    state = world.init_state()
    items = np.arange(50)
    before = world.click_prob(state, np.zeros(50, int), items)
    world.update(state, np.zeros(5, int), items[:5], np.ones(5, np.int8), np.random.default_rng(0))
    after = world.click_prob(state, np.zeros(50, int), items)
    same_cat = world.item_cate[items] == world.item_cate[items[4]]
    assert (after[same_cat] > before[same_cat]).all()
    n = write_events(cfg, 3_000, str(tmp_path / "events"), chunk_rounds=3)
    assert n == 3_000 and len(pd.read_parquet(tmp_path / "events")) == 3_000


def test_configs_reject_unknown_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        from_dict(DataConfig, {"sorce": "movielens"})
    with pytest.raises(ConfigError, match="data.source"):
        DataConfig(source="kaggle")
    with pytest.raises(ConfigError, match="sum"):
        FeatureConfig(split=(0.5, 0.1, 0.1))
    assert from_dict(FeatureConfig, {"max_seq_len": 50}).max_seq_len == 50


def test_canonical_events_load_from_an_fsspec_uri() -> None:
    import fsspec

    from genctr.data.sources.canonical import load_canonical

    with fsspec.open("memory://genctr-test/events.parquet", "wb") as f:
        good_events().to_parquet(f)
    assert len(load_canonical("memory://genctr-test/events.parquet")) == 6
    with pytest.raises(DataValidationError, match="not found"):
        load_canonical("memory://genctr-test/missing.parquet")
