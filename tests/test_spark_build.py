"""Feature build (PySpark): a hand-checked tiny example, a no-leakage property, atomicity."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from genctr.config import FeatureConfig
from genctr.errors import ConfigError, DataValidationError
from genctr.features import spark_ops
from genctr.features.layout import BuildLayout
from genctr.features.spark_build import build_features

pytestmark = pytest.mark.slow

COLUMNS = ["request_id", "user_id", "item_id", "category_id", "event_time", "clicked"]
# User 10: equal times (r1, r2 at t=100; r4, r5 at t=300). User 20: r8 (click) and r9 tie at
# t=250, so request_id decides the split; item 999 / category 50 appear only in test.
# User 30 never clicks. User 40 has a single impression (it must still be train).
TINY = [
    (1, 10, 100, 7, 100, 1), (2, 10, 101, 7, 100, 1), (3, 10, 102, 8, 200, 0),
    (4, 10, 100, 7, 300, 1), (5, 10, 103, 8, 300, 0), (6, 10, 104, 9, 400, 1),
    (7, 20, 101, 7, 150, 1), (8, 20, 102, 8, 250, 1), (9, 20, 100, 7, 250, 0), (10, 20, 999, 50, 350, 1),
    (11, 30, 100, 7, 120, 0), (12, 30, 101, 7, 500, 0),
    (13, 40, 104, 9, 50, 1),
]
TINY_CFG = FeatureConfig(max_seq_len=2, split=(0.5, 0.25, 0.25))
T0 = 1_600_000_000  # TINY's times are seconds after T0 (event times before 1990 are refused)


def _events_frame(rows: list[tuple[int, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS).astype("int64")
    df["clicked"] = df["clicked"].astype("int8")
    df["event_time"] += T0
    df["price"] = 1.0 + df["item_id"] % 3  # mean price per item is checkable
    return df


def _read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


@pytest.fixture(scope="module")
def tiny_build(spark, tmp_path_factory) -> BuildLayout:
    root = tmp_path_factory.mktemp("tiny")
    _events_frame(TINY).to_parquet(root / "events.parquet")
    build_features(root / "events.parquet", root / "build", TINY_CFG, spark=spark)
    return BuildLayout(root / "build")


def _samples(lay: BuildLayout, split: str) -> pd.DataFrame:
    return _read(lay.samples(split)).sort_values("sample_id").reset_index(drop=True)


def test_tiny_splits_and_pointers(tiny_build: BuildLayout) -> None:
    # n=6 -> train ranks 1..3, valid 4; n=4 -> 1..2, 3; n=2 -> 1, none; n=1 -> 1 (floor cut points)
    expected = {"train": [1, 2, 3, 7, 8, 11, 13], "valid": [4, 9], "test": [5, 6, 10, 12]}
    # sample_id: (hist_end, seq_len, last_beh_time) with max_seq_len = 2; equal times never count
    pointers = {1: (0, 0, -1), 2: (0, 0, -1), 3: (2, 2, 100), 4: (2, 2, 100), 5: (2, 2, 100),
                6: (3, 2, 300), 7: (0, 0, -1), 8: (1, 1, 150), 9: (1, 1, 150), 10: (2, 2, 250),
                11: (0, 0, -1), 12: (0, 0, -1), 13: (0, 0, -1)}
    for split, ids in expected.items():
        df = _samples(tiny_build, split)
        assert df["sample_id"].tolist() == ids, split
        got = {r.sample_id: (r.hist_end, r.seq_len, r.last_beh_time - T0 if r.last_beh_time >= 0 else -1)
               for r in df.itertuples()}
        assert got == {i: pointers[i] for i in ids}, split


def test_tiny_sample_types_and_indices(tiny_build: BuildLayout) -> None:
    schema = pq.read_schema(next(tiny_build.samples("train").glob("*.parquet")))
    types = {f.name: str(f.type) for f in schema}
    assert types == {
        "sample_id": "int64", "user_id": "int64", "item_id": "int64", "user_idx": "int32",
        "item_idx": "int32", "cate_idx": "int32", "price": "float", "event_time": "int64",
        "label": "int8", "hist_end": "int32", "seq_len": "int32", "last_beh_time": "int64",
    }
    test = _samples(tiny_build, "test").set_index("sample_id")
    assert (test.loc[10, "item_idx"], test.loc[10, "cate_idx"]) == (1, 1)  # only seen in test -> OOV
    assert test.loc[5, "item_idx"] == 1  # item 103 only appears in test
    assert test.loc[6, ["user_idx", "item_idx", "cate_idx"]].tolist() == [2, 5, 4]


def test_tiny_vocabularies(tiny_build: BuildLayout) -> None:
    # train frequency desc, then raw id: items 100, 101, 102 twice each, 104 once
    vocab = {n: dict(zip(*_read(tiny_build.vocab(n))[["raw_id", "idx"]].to_numpy().T, strict=True))
             for n in ("user", "item", "category")}
    assert vocab["user"] == {10: 2, 20: 3, 30: 4, 40: 5}
    assert vocab["item"] == {100: 2, 101: 3, 102: 4, 104: 5}
    assert vocab["category"] == {7: 2, 8: 3, 9: 4}
    stats = json.loads(tiny_build.stats.read_text())
    assert stats["vocab_sizes"] == {"user": 6, "item": 6, "category": 5}
    assert stats["splits"]["train"] == {"rows": 7, "clicks": 5, "click_rate": 5 / 7, "mean_seq_len": 3 / 7}
    assert (stats["n_events"], stats["n_behaviors"], stats["n_users"], stats["max_seq_len"]) == (13, 8, 4, 2)


def test_tiny_histories(tiny_build: BuildLayout) -> None:
    h = _read(tiny_build.histories)
    assert h["user_id"].tolist() == [10, 20, 30, 40]  # user_idx order
    assert h["user_idx"].tolist() == [2, 3, 4, 5]
    assert h["n_behaviors"].tolist() == [4, 3, 0, 1]
    assert h["n_train_behaviors"].tolist() == [2, 2, 0, 1]
    assert [list(x) for x in h["item_seq"]] == [[2, 3, 2, 5], [3, 4, 1], [], [5]]
    assert [list(x) for x in h["cate_seq"]] == [[2, 2, 2, 4], [2, 3, 1], [], [4]]
    assert [list(x - T0) for x in h["time_seq"]] == [[100, 100, 300, 400], [150, 250, 350], [], [50]]
    assert h["item_seq"].notna().all() and h["time_seq"].notna().all()


def test_tiny_items_and_feast(tiny_build: BuildLayout) -> None:
    items = _read(tiny_build.items).set_index("item_id")
    assert items.loc[999, ["item_idx", "category_id", "cate_idx"]].tolist() == [1, 50, 1]
    assert items.loc[101, ["item_idx", "cate_idx", "price"]].tolist() == [3, 2, 3.0]
    f = _read(tiny_build.feast_user).sort_values("user_id").reset_index(drop=True)
    assert [list(x) for x in f["item_seq"]] == [[100, 104], [102, 999], [], [104]]  # last 2, oldest first
    assert [list(x) for x in f["cate_seq"]] == [[7, 9], [8, 50], [], [9]]
    assert f["seq_len"].tolist() == [2, 2, 0, 1]
    stamps = [int(ts.timestamp()) - T0 for ts in f["event_timestamp"]]
    assert stamps == [400, 350, 500, 50]  # user 30: its last impression
    fi = _read(tiny_build.feast_item).set_index("item_id")
    assert fi["event_timestamp"].dt.tz is not None
    assert (int(fi.loc[102, "event_timestamp"].timestamp()) - T0, fi.loc[102, "category_id"]) == (200, 8)


def _random_events(n: int, n_users: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "request_id": rng.permutation(n).astype("int64") + 1,
        "user_id": rng.integers(1, n_users + 1, n),
        "item_id": rng.integers(1, 60, n),
        "event_time": T0 + rng.integers(0, 40, n),  # few distinct times: many ties
        "clicked": (rng.random(n) < 0.4).astype("int8"),
    })
    df["category_id"] = df["item_id"] % 7
    return df[COLUMNS]


def test_no_leakage_and_maximal_history(spark, tmp_path: Path) -> None:
    events = _random_events(1500, 40, seed=3)
    events.to_parquet(tmp_path / "events.parquet")
    cfg = FeatureConfig(max_seq_len=5, split=(0.7, 0.0, 0.3))  # no valid rows at all
    build_features(tmp_path / "events.parquet", tmp_path / "build", cfg, spark=spark)
    lay = BuildLayout(tmp_path / "build")
    valid = pq.read_table(lay.samples("valid"))  # an empty split is still a typed table
    assert valid.num_rows == 0 and valid.schema.names == pq.read_table(lay.samples("test")).schema.names
    h = _read(lay.histories)
    assert h["user_idx"].tolist() == list(range(2, 2 + len(h)))  # CSR row r is user_idx r + 2
    offsets = np.concatenate([[0], np.cumsum(h["n_behaviors"])])
    times = np.concatenate([np.asarray(t, np.int64) for t in h["time_seq"]])
    clicks = events[events["clicked"] == 1]
    assert len(times) == len(clicks)
    for row in h.itertuples():  # each user's behaviours: exactly its clicks, time-sorted
        mine = clicks[clicks["user_id"] == row.user_id].sort_values(["event_time", "request_id"])
        assert list(row.time_seq) == mine["event_time"].tolist()
    samples = pd.concat([_read(lay.samples(s)).assign(split=s) for s in ("train", "valid", "test")])
    assert len(samples) == len(events)
    start = offsets[samples["user_idx"].to_numpy() - 2]
    end = start + samples["hist_end"].to_numpy()
    t = samples["event_time"].to_numpy()
    for s, e, ti, u in zip(start, end, t, samples["user_idx"], strict=True):
        assert np.all(times[s:e] < ti)  # no leakage
        assert e == offsets[u - 1] or times[e] >= ti  # maximal: the next behaviour is not earlier
    last = np.where(end > start, times[np.maximum(end - 1, 0)], -1)
    assert np.array_equal(samples["last_beh_time"].to_numpy(), last)
    assert np.array_equal(samples["seq_len"].to_numpy(), np.minimum(samples["hist_end"], 5))
    # time-ordered split per user: every train row precedes every valid row, which precede test
    rank = samples.sort_values(["event_time", "sample_id"]).groupby("user_id")["split"].agg(list)
    order = {"train": 0, "valid": 1, "test": 2}
    assert all([order[x] for x in r] == sorted(order[x] for x in r) for r in rank)


def test_failed_build_leaves_nothing(spark, tiny_build: BuildLayout, tmp_path: Path, monkeypatch) -> None:
    good = tmp_path / "build"
    shutil.copytree(tiny_build.root, good)
    before = sorted(p.relative_to(good) for p in good.rglob("*"))
    stats_before = (good / "stats.json").read_text()
    bad = tmp_path / "bad.parquet"
    _events_frame(TINY).drop(columns=["clicked"]).to_parquet(bad)
    for target in (good, tmp_path / "fresh"):
        with pytest.raises(DataValidationError, match="clicked"):
            build_features(bad, target, TINY_CFG, spark=spark)
    with pytest.raises(DataValidationError, match="does not exist"):
        build_features(tmp_path / "nope.parquet", tmp_path / "fresh", TINY_CFG, spark=spark)
    # a failure after Spark has written part of the build
    ok = tmp_path / "ok.parquet"
    _events_frame(TINY).to_parquet(ok)

    def boom(*args, **kwargs):
        partial = list(tmp_path.glob(".build.*.tmp/samples/train/*.parquet"))  # genctr.atomic.temp_path
        raise RuntimeError(f"injected failure after writing {len(partial)} sample files")

    monkeypatch.setattr(spark_ops, "user_behaviours", boom)  # samples are written by then
    with pytest.raises(RuntimeError, match="injected failure after writing [1-9]"):
        build_features(ok, good, TINY_CFG, spark=spark)
    assert sorted(p.relative_to(good) for p in good.rglob("*")) == before
    assert (good / "stats.json").read_text() == stats_before
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "build", "ok.parquet"]


# ----------------------------------------------------------------------------- masters and locations
@pytest.mark.parametrize("master", ["local", "local[*]", "local[2]", "local[2,3]", "spark://127.0.0.1:7077",
                                    "spark://a:7077,b:7077", "sc://localhost", "sc://h:15002/;token=abc",
                                    "k8s://https://10.0.0.1:443", "yarn"])
def test_accepted_masters(master: str) -> None:
    from genctr.features.spark_session import check_master

    assert check_master(f" {master} ") == master


@pytest.mark.parametrize("master", ["", "local[0]", "spark://host", "sc:/host:1", "http://h:1", "local[*"])
def test_refused_masters_name_the_accepted_forms(master: str) -> None:
    from genctr.features.spark_session import check_master

    with pytest.raises(ConfigError, match=r"spark://host:port, sc://host:port"):
        check_master(master)


def test_an_unreachable_master_is_a_config_error_before_any_jvm_starts() -> None:
    from conftest import free_port

    from genctr.features.spark_session import get_spark

    for master, what in ((f"spark://127.0.0.1:{free_port()}", "standalone master"),
                         (f"sc://127.0.0.1:{free_port()}", "Connect server")):
        with pytest.raises(ConfigError, match=f"no Spark {what} answers at 127.0.0.1"):
            get_spark(master)


def test_locations_as_this_process_and_spark_see_them(tmp_path: Path) -> None:
    from genctr.features.build_store import Location

    local = Location.parse(tmp_path / "b")
    assert local.local and local.path == str(tmp_path / "b") and local.spark == (tmp_path / "b").as_uri()
    assert Location.parse((tmp_path / "b").as_uri()).path == str(tmp_path / "b")
    s3 = Location.parse("s3://bucket/builds/1")
    assert (s3.local, s3.path, s3.spark) == (False, "bucket/builds/1", "s3a://bucket/builds/1")
    assert s3.join("samples/train").spark == "s3a://bucket/builds/1/samples/train"
    assert Location.parse("memory://x/y").spark is None  # no Hadoop connector: only a local Spark can use it
    for bad, needle in (("s3://bucket", "no prefix"), ("nosuchscheme://a/b", "no filesystem"), ("  ", "empty")):
        with pytest.raises(ConfigError, match=needle):
            Location.parse(bad)


def test_copy_tree_replaces_the_old_build_and_writes_stats_last(tmp_path: Path) -> None:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from genctr.errors import ArtifactError
    from genctr.features.build_store import copy_tree, download_build

    src = tmp_path / "src"
    (src / "samples" / "train").mkdir(parents=True)
    (src / "samples" / "train" / "part-0.parquet").write_bytes(b"p0")
    (src / "samples" / "train" / ".part-0.parquet.crc").write_bytes(b"crc")
    (src / "samples" / "train" / "_SUCCESS").write_bytes(b"")
    (src / "stats.json").write_text('{"n": 1}')
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/store/build/stats.json", b"old")
    mem.pipe_file("/store/build/samples/train/part-9.parquet", b"old part")
    order: list[str] = []
    real_put = mem.put_file
    # the ignore below: a spy on the in-memory filesystem's method
    mem.put_file = lambda a, b, **kw: (order.append(b), real_put(a, b, **kw))[1]  # type: ignore[method-assign]
    try:
        assert copy_tree(LocalFileSystem(), str(src), mem, "/store/build") == 3
    finally:
        del mem.put_file
    assert order[-1] == "/store/build/stats.json" and len(order) == 3  # the marker last; no .crc
    assert sorted(mem.find("/store/build")) == ["/store/build/samples/train/_SUCCESS",
                                                "/store/build/samples/train/part-0.parquet", "/store/build/stats.json"]
    out = download_build("memory:///store/build", tmp_path / "copy")
    assert (out / "samples" / "train" / "part-0.parquet").read_bytes() == b"p0"
    (src / "stats.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        copy_tree(LocalFileSystem(), str(src), mem, "/store/other")
    mem.rm("/store/build/stats.json")
    with pytest.raises(ArtifactError, match="no complete feature build"):
        download_build("memory:///store/build", tmp_path / "copy")
    assert (out / "stats.json").read_text() == '{"n": 1}'  # the earlier copy is untouched
    mem.rm("/store", recursive=True)


def test_a_table_spark_wrote_elsewhere_is_reported(tmp_path: Path) -> None:
    from genctr.features.build_store import BuildWriter, Location

    writer = BuildWriter(Location.parse(tmp_path / "build"), spark_local=False)  # as for a remote Connect server
    with pytest.raises(ConfigError, match="cannot see it.*object-store URI"):
        writer.check_visible("samples/train")
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_spark_without_the_s3a_connector_is_a_config_error(spark) -> None:
    from genctr.features.spark_events import read_events

    with pytest.raises(ConfigError, match="Spark cannot reach s3a://bucket/events.*hadoop-aws"):
        read_events(spark, "s3a://bucket/events")


def test_a_build_to_an_object_store_with_a_local_master(spark, tiny_build: BuildLayout, tmp_path: Path) -> None:
    """Upload mode: Spark writes locally, fsspec uploads (memory:// stands in for a bucket here; the S3 case
    runs against moto's server in tests/test_spark_application.py)."""
    import fsspec
    from build_compare import assert_same_build

    from genctr.features.build_store import download_build

    events = tmp_path / "events.parquet"
    _events_frame(TINY).to_parquet(events)
    mem = fsspec.filesystem("memory")
    mem.put(str(events), "/bucket/events.parquet")
    try:
        stats = build_features("memory://bucket/events.parquet", "memory://bucket/builds/1", TINY_CFG, spark=spark)
        assert stats["n_events"] == len(TINY)
        assert not [p for p in mem.ls("/bucket/builds", detail=False) if p.rsplit("/", 1)[1].startswith(".")]
        assert_same_build(download_build("memory://bucket/builds/1", tmp_path / "copy"), tiny_build.root)
    finally:
        mem.rm("/bucket", recursive=True)
