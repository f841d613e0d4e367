"""Feast: materialise a real build into SQLite and a real Redis server, read it back, and check
that serving sees exactly the history training sees (train/serve consistency)."""
from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from build_fixtures import MAX_SEQ_LEN, NO_CLICK_USERS, shared_build, tiny_events
from conftest import free_port
from feast import FeatureStore

from genctr.errors import ConfigError
from genctr.features.feast_sync import (
    DEFAULT_REPO_DIR,
    MATERIALIZE_START,
    USER_VIEW,
    get_online_sequences,
    materialize,
)
from genctr.features.layout import OOV, SPLITS, BuildLayout
from genctr.storage import StorageLayout

pytestmark = pytest.mark.slow
COLD_USER = 10**12  # never seen by the build


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    return shared_build(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def sqlite_store(build: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return materialize(build, online="sqlite", work_dir=tmp_path_factory.mktemp("feast_sqlite"))


@pytest.fixture(scope="module")
def tables(build: Path) -> dict[str, pd.DataFrame]:
    lay = BuildLayout(build)
    return {
        "feast_user": pd.read_parquet(lay.feast_user), "feast_item": pd.read_parquet(lay.feast_item),
        "histories": pd.read_parquet(lay.histories),
        "samples": pd.concat([pd.read_parquet(lay.samples(s)) for s in SPLITS], ignore_index=True),
        **{f"vocab_{v}": pd.read_parquet(lay.vocab(v)) for v in ("item", "category")},
    }


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence; stopped at teardown."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); CI installs it")
    port = free_port()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(log.parent)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lists(df: pd.DataFrame, col: str) -> list[list[int]]:
    return [[int(x) for x in v] for v in df[col]]


def test_sqlite_serves_the_build_tables(sqlite_store: Any, tables: dict[str, pd.DataFrame]) -> None:
    fu = tables["feast_user"]
    got = get_online_sequences(sqlite_store, fu["user_id"].tolist())
    assert [got[int(u)]["item_seq"] for u in fu["user_id"]] == _lists(fu, "item_seq")
    assert [got[int(u)]["cate_seq"] for u in fu["user_id"]] == _lists(fu, "cate_seq")
    assert [got[int(u)]["seq_len"] for u in fu["user_id"]] == fu["seq_len"].tolist()
    assert max(v["seq_len"] for v in got.values()) == MAX_SEQ_LEN  # some histories were truncated


def test_feature_service_serves_items(sqlite_store: Any, tables: dict[str, pd.DataFrame]) -> None:
    fi = tables["feast_item"].head(20)
    service = sqlite_store.get_feature_service("ctr_model_v1")
    rows = [{"user_id": 1, "item_id": int(i)} for i in fi["item_id"]]
    got = sqlite_store.get_online_features(features=service, entity_rows=rows).to_dict()
    assert got["category_id"] == fi["category_id"].tolist()
    np.testing.assert_allclose(got["price"], fi["price"].to_numpy(), rtol=1e-6)
    assert len(got["item_seq"]) == len(rows)


def test_train_serve_consistency(sqlite_store: Any, tables: dict[str, pd.DataFrame]) -> None:
    """Served raw ids, mapped through the build's vocabularies, are the last L behaviours the
    training data holds (histories[max(0, n - L):n]) for an impression after the last behaviour."""
    hist = tables["histories"]
    item_vocab = dict(zip(tables["vocab_item"]["raw_id"], tables["vocab_item"]["idx"], strict=True))
    cate_vocab = dict(zip(tables["vocab_category"]["raw_id"], tables["vocab_category"]["idx"], strict=True))
    sampled = hist.sample(n=25, random_state=0)
    served = get_online_sequences(sqlite_store, sampled["user_id"].tolist())
    for row in sampled.itertuples():
        n, got = int(row.n_behaviors), served[int(row.user_id)]
        want_items = [int(x) for x in row.item_seq[max(0, n - MAX_SEQ_LEN):n]]
        want_cates = [int(x) for x in row.cate_seq[max(0, n - MAX_SEQ_LEN):n]]
        assert [item_vocab.get(x, OOV) for x in got["item_seq"]] == want_items, row.user_id
        assert [cate_vocab.get(x, OOV) for x in got["cate_seq"]] == want_cates, row.user_id
        assert got["seq_len"] == len(want_items) == min(n, MAX_SEQ_LEN)


def test_samples_after_last_behaviour_see_the_served_sequence(sqlite_store: Any,
                                                              tables: dict[str, pd.DataFrame]) -> None:
    """A training sample whose history pointer covers all behaviours sees what Feast serves."""
    hist = tables["histories"].set_index("user_id")
    s = tables["samples"].join(hist[["n_behaviors", "time_seq"]], on="user_id")
    late = s[(s["hist_end"] == s["n_behaviors"]) & (s["n_behaviors"] > 0)].drop_duplicates("user_id")
    assert len(late) >= 10
    served = get_online_sequences(sqlite_store, late["user_id"].tolist())
    for r in late.itertuples():
        assert served[int(r.user_id)]["seq_len"] == r.seq_len
        assert r.last_beh_time == int(r.time_seq[r.n_behaviors - 1]) < r.event_time


def test_cold_and_behaviourless_users_get_empty_sequences(sqlite_store: Any) -> None:
    got = get_online_sequences(sqlite_store, [COLD_USER, *NO_CLICK_USERS, COLD_USER])
    assert set(got) == {COLD_USER, *NO_CLICK_USERS}
    for v in got.values():
        assert v == {"item_seq": [], "cate_seq": [], "seq_len": 0}
    assert get_online_sequences(sqlite_store, []) == {}


def test_materialize_records_its_interval_in_the_registry(sqlite_store: Any, tables: dict[str, pd.DataFrame]) -> None:
    """Feast's own materialisation, not a bare online write: each view carries the interval, from
    before any event to at least its newest row, so incremental runs start where this one ended."""
    newest = max(tables["feast_user"]["event_timestamp"].max(), tables["feast_item"]["event_timestamp"].max())
    for view in (USER_VIEW, "item_features"):
        intervals = sqlite_store.get_feature_view(view).materialization_intervals
        assert len(intervals) == 1, view
        start, end = intervals[0]
        assert start == MATERIALIZE_START and end >= newest.to_pydatetime()


def test_checked_in_repo_stays_clean(sqlite_store: Any) -> None:
    assert not (DEFAULT_REPO_DIR / "data").exists()
    assert sqlite_store.config.registry.path.startswith("/")


def test_bad_arguments_are_config_errors(build: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="online store"):
        materialize(build, online="cassandra", work_dir=tmp_path)  # type: ignore[arg-type]  # a wrong value on purpose
    with pytest.raises(ConfigError, match="does not exist"):
        materialize(build, repo_dir=tmp_path, work_dir=tmp_path / "w")


def test_redis_serves_what_sqlite_serves(build: Path, sqlite_store: Any, redis_url: str, tmp_path: Path,
                                         tables: dict[str, pd.DataFrame]) -> None:
    store = materialize(build, online="redis", redis_url=redis_url, work_dir=tmp_path)
    assert store.config.online_store.type == "redis"
    users = tables["feast_user"]["user_id"].tolist() + [COLD_USER]
    from_redis = get_online_sequences(store, users)
    assert from_redis == get_online_sequences(sqlite_store, users)
    assert from_redis[COLD_USER]["seq_len"] == 0


def test_sqlite_and_redis_have_separate_registries(build: Path, redis_url: str, tmp_path: Path) -> None:
    """One registry per online store: applying the Redis config must not plan the SQLite store's
    tables away (a shared registry file did), in the checked-in repo and in a storage layout."""
    repo_registries = {yaml_name: yaml.safe_load((DEFAULT_REPO_DIR / yaml_name).read_text())["registry"]["path"]
                       for yaml_name in ("feature_store.yaml", "feature_store.redis.yaml")}
    assert len(set(repo_registries.values())) == 2, repo_registries
    layout = StorageLayout(str(tmp_path / "root"))
    sqlite = materialize(build, online="sqlite", work_dir=tmp_path / "sqlite",
                         registry=layout.feast_registry("sqlite"))
    redis = materialize(build, online="redis", redis_url=redis_url, work_dir=tmp_path / "redis",
                        registry=layout.feast_registry("redis"))
    assert sqlite.config.registry.path == str(tmp_path / "root" / "feast" / "sqlite" / "registry.db")
    assert redis.config.registry.path == str(tmp_path / "root" / "feast" / "redis" / "registry.db")
    users = [1, 2, COLD_USER]
    assert get_online_sequences(sqlite, users) == get_online_sequences(redis, users)  # both stores still serve
    assert get_online_sequences(sqlite, [1])[1]["seq_len"] > 0


# ------------------------------------------------------------------ incremental materialisation
def _recent(events: pd.DataFrame, newest: int) -> pd.DataFrame:
    """``events`` shifted so the newest one happens at ``newest`` (epoch seconds): within Feast's
    52-week fallback window, where a view without a recorded interval would reload everything."""
    out = events.copy()
    out["event_time"] = out["event_time"] + (newest - int(out["event_time"].max()))
    return out


def _build(spark: Any, events: pd.DataFrame, root: Path) -> Path:
    from genctr.config import FeatureConfig
    from genctr.features.spark_build import build_features

    root.mkdir(parents=True)
    events.to_parquet(root / "events.parquet", index=False)
    build_features(root / "events.parquet", root / "build", FeatureConfig(max_seq_len=MAX_SEQ_LEN,
                                                                         shuffle_partitions=2), spark=spark)
    return root / "build"


def _feast_incremental(work: Path, end: datetime) -> None:
    """The real ``feast materialize-incremental`` CLI against the rendered repo."""
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run([str(feast), "-c", str(work), "materialize-incremental", end.strftime("%Y-%m-%dT%H:%M:%S")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _mark_and_count(db: Path, view: str, mark: bool) -> set[bytes]:
    """Before a run (``mark``): blank every row's event_ts. After: the entity keys a run wrote."""
    table = f"genctr_{view}"
    with sqlite3.connect(db) as conn:
        if mark:
            conn.execute(f"UPDATE {table} SET event_ts = NULL")
            return set()
        return {row[0] for row in conn.execute(f"SELECT DISTINCT entity_key FROM {table} WHERE event_ts IS NOT NULL")}


def test_feast_incremental_after_materialize_loads_only_new_rows(spark: Any, tmp_path: Path) -> None:
    """``genctr features materialize`` leaves Feast's bookkeeping right: ``feast materialize-incremental``
    right after it loads nothing (a bare online write leaves no interval, and Feast would reload the
    last 52 weeks: every row here), and after new events exactly the users whose sequence changed."""
    now = int(time.time())
    events = _recent(tiny_events(), now - 86_400)
    first = _build(spark, events, tmp_path / "first")
    work = tmp_path / "feast"
    store = materialize(first, work_dir=work)
    db = work / "online_store.db"
    n_users = len(pd.read_parquet(BuildLayout(first).feast_user))
    assert len(_mark_and_count(db, USER_VIEW, mark=False)) == n_users  # the full load wrote every user

    for view in (USER_VIEW, "item_features"):
        _mark_and_count(db, view, mark=True)
    _feast_incremental(work, datetime.now(UTC))
    assert _mark_and_count(db, USER_VIEW, mark=False) == set()
    assert _mark_and_count(db, "item_features", mark=False) == set()

    # new events after the materialisation: clicks for five users, only non-clicks for three more
    ended = store.get_feature_view(USER_VIEW).most_recent_end_time
    t_new = int(ended.timestamp()) + 60
    with_clicks = sorted(set(events.loc[events["clicked"] == 1, "user_id"]))
    clickers, browsers = with_clicks[:5], with_clicks[5:8]
    item = int(events["item_id"].iloc[0])
    new = pd.DataFrame([{"user_id": u, "clicked": int(u in clickers)} for u in clickers + browsers for _ in (0, 1)])
    new = new.assign(request_id=np.arange(len(new)) + int(events["request_id"].max()) + 1, item_id=item,
                     category_id=item % 11, event_time=t_new + np.arange(len(new)), price=1.0)
    second = _build(spark, pd.concat([events, new[events.columns]], ignore_index=True), tmp_path / "second")
    # the new table version lands beside the old one, where the registry's source points
    source = BuildLayout(first).feast_user
    for part in BuildLayout(second).feast_user.glob("part-*.parquet"):
        shutil.copyfile(part, source / f"second-{part.name}")
    changed = pd.read_parquet(BuildLayout(second).feast_user)
    changed = changed[changed["event_timestamp"] > pd.Timestamp(ended)]
    assert sorted(changed["user_id"]) == clickers

    for view in (USER_VIEW, "item_features"):
        _mark_and_count(db, view, mark=True)
    _feast_incremental(work, datetime.now(UTC) + timedelta(hours=1))
    assert len(_mark_and_count(db, USER_VIEW, mark=False)) == len(clickers)
    assert _mark_and_count(db, "item_features", mark=False) == set()
    served = get_online_sequences(FeatureStore(repo_path=str(work)), clickers)
    for row in changed.itertuples():
        assert served[int(row.user_id)]["item_seq"] == [int(x) for x in row.item_seq]
        assert served[int(row.user_id)]["item_seq"][-1] == item  # the new click is the newest behaviour
