"""A tiny real feature build (Spark), built once per test session and shared by test modules."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_SEQ_LEN = 8
NO_CLICK_USERS = (39, 40)  # users without a single behaviour: empty sequences
_BUILDS: dict[str, Path] = {}


def tiny_events(seed: int = 0) -> pd.DataFrame:
    """Canonical events: 40 users with 8-60 impressions each, ~30 % clicks, 150 items."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(8, 61, 40)
    users = np.repeat(np.arange(1, 41), counts)
    n = len(users)
    items = rng.integers(1, 151, n)
    clicked = (rng.random(n) < 0.3).astype("int8")
    clicked[np.isin(users, NO_CLICK_USERS)] = 0
    return pd.DataFrame({
        "request_id": np.arange(n, dtype="int64") + 10_000,
        "user_id": users.astype("int64"),
        "item_id": items.astype("int64"),
        "category_id": (items % 11).astype("int64"),
        "event_time": (1_600_000_000 + rng.integers(0, 5_000_000, n)).astype("int64"),
        "clicked": clicked,
        "price": np.round(rng.random(n) * 10, 2),
    })


def write_partitioned_events(events: Path, parts: int = 3) -> pd.DataFrame:
    """:func:`tiny_events` as ``parts`` Parquet files under ``events`` (several input partitions, as a
    cluster reads them); returns the events."""
    events.mkdir(parents=True)
    df = tiny_events()
    for i in range(parts):
        df.iloc[i::parts].to_parquet(events / f"part-{i}.parquet", index=False)
    return df


def shared_build(tmp_path_factory: Any, spark: Any) -> Path:
    """Build ``tiny_events()`` once per session (L = MAX_SEQ_LEN); returns the build directory."""
    if "tiny" not in _BUILDS:
        from genctr.config import FeatureConfig
        from genctr.features.spark_build import build_features

        root = tmp_path_factory.mktemp("tiny_build")
        tiny_events().to_parquet(root / "events.parquet", index=False)
        cfg = FeatureConfig(max_seq_len=MAX_SEQ_LEN, shuffle_partitions=2)
        build_features(root / "events.parquet", root / "build", cfg, spark=spark)
        _BUILDS["tiny"] = root / "build"
    return _BUILDS["tiny"]
