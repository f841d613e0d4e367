"""The Spark attribution join (raw clicks -> credited clicks) on the shared local Spark session: the
window's boundary, late / early / orphan / duplicate clicks, agreement with the pandas join of
genctr.monitoring.logs, and the canary collect step over a sink's log directory."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from genctr.errors import ConfigError
from genctr.monitoring.attribution import AttributionConfig, AttributionCounts, attribute, run_attribution
from genctr.monitoring.clicks import RAW_CLICKS
from genctr.monitoring.collect import collect, collect_to
from genctr.monitoring.logs import CLICK_SCHEMA, append, join_clicks, read_table
from genctr.monitoring.sink.parts import PartWriter

pytestmark = pytest.mark.slow
IMP_COLS = {"request_id": "string", "item_id": "long", "ts": "long"}


def sdf(spark: Any, rows: list[tuple[str, int, int]]) -> Any:
    return spark.createDataFrame(rows, ", ".join(f"{c} {t}" for c, t in IMP_COLS.items()))


def run(spark: Any, shown: list[tuple[str, int, int]], clicked: list[tuple[str, int, int]], **cfg: int
        ) -> tuple[list[tuple[str, int, int]], AttributionCounts]:
    result = attribute(sdf(spark, shown), sdf(spark, clicked), AttributionConfig(**cfg))
    try:
        got = sorted((r["request_id"], r["item_id"], r["ts"]) for r in result.credited.collect())
    finally:
        result.release()
    return got, result.counts


def test_window_boundary_late_and_early(spark: Any) -> None:
    shown = [("r1", 1, 1000), ("r2", 1, 1000), ("r3", 1, 1000), ("r4", 1, 1000)]
    clicked = [("r1", 1, 1100),  # exactly at the window's end: credited
               ("r2", 1, 1101),  # one second later: late
               ("r3", 1, 990),   # 10 s before the impression, within the clock-skew tolerance: credited
               ("r4", 1, 989)]   # 11 s before: early
    got, counts = run(spark, shown, clicked, window_s=100, clock_skew_s=10)
    assert got == [("r1", 1, 1100), ("r3", 1, 990)]
    assert (counts.credited, counts.late, counts.early, counts.orphans, counts.raw_clicks) == (2, 1, 1, 0, 4)


def test_orphans_and_duplicates_count_once(spark: Any) -> None:
    shown = [("a", 1, 1000), ("a", 2, 1000), ("b", 7, 5000), ("b", 7, 9000)]  # (b, 7) shown twice
    clicked = [("a", 1, 1300), ("a", 1, 1010), ("a", 1, 1010),  # a triple click: its earliest counts
               ("a", 3, 1000),                                  # never shown: orphan
               ("zz", 1, 1000),                                 # unknown request: orphan
               ("b", 7, 5000 + 86_400 + 1)]                     # late against the *earliest* showing
    got, counts = run(spark, shown, clicked)
    assert got == [("a", 1, 1010)]
    assert counts == AttributionCounts(raw_clicks=6, credited=1, late=1, early=0, orphans=2, duplicate_clicks=2,
                                       duplicate_impressions=1, window_s=86_400)
    assert counts.raw_clicks == counts.credited + counts.late + counts.early + counts.orphans + counts.duplicate_clicks


def test_agrees_with_the_pandas_join(spark: Any) -> None:
    rng = np.random.default_rng(5)
    n = 3_000
    imps = pd.DataFrame({"request_id": [f"q{i // 3}" for i in range(n)], "item_id": rng.integers(0, 4, n),
                         "ts": rng.integers(1_700_000_000, 1_700_100_000, n)})
    shown_keys = imps.sample(900, random_state=1)
    clicks = pd.concat([
        shown_keys.assign(ts=shown_keys["ts"] + rng.integers(0, 3_600, len(shown_keys))),  # on shown ads
        shown_keys.head(200).assign(ts=shown_keys["ts"].head(200) + 7_200),                  # second clicks
        pd.DataFrame({"request_id": [f"gone{i}" for i in range(50)], "item_id": 0, "ts": 1_700_000_000}),
    ], ignore_index=True).astype(CLICK_SCHEMA)
    full = imps.assign(user_id=1, arm="champion", category_id=1, position=0, bid=1.0, pctr=0.1, cpc=0.5,
                       randomisation="user")
    p_imps, p_credited, quality = join_clicks(full, clicks, "dedupe")
    got, counts = run(spark, list(imps.itertuples(index=False, name=None)),
                      list(clicks.itertuples(index=False, name=None)), window_s=10**9)
    want = sorted(p_credited[["request_id", "item_id", "ts"]].itertuples(index=False, name=None))
    assert got == want and len(got) > 500
    assert counts.orphans == quality.orphan_clicks == 50
    assert counts.duplicate_clicks == quality.duplicate_clicks and counts.duplicate_clicks > 0
    assert counts.duplicate_impressions == quality.duplicate_impressions and counts.duplicate_impressions > 0
    assert counts.credited == int(p_imps["clicked"].sum())


def test_run_attribution_writes_only_credited_parts_and_counts(spark: Any, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    PartWriter(str(logs)).write(RAW_CLICKS, "part-x.parquet", pd.DataFrame(
        {"request_id": ["r.0", "r.0", "s.0"], "item_id": [1, 2, 1], "ts": [1_700_000_010] * 3}))
    append(logs, "impressions", _impressions([("r.0", 1), ("r.0", 2)], ts=1_700_000_000))
    counts = run_attribution(logs, tmp_path / "out", spark=spark)
    assert (counts.credited, counts.orphans) == (2, 1)
    parts = sorted(p.name for p in (tmp_path / "out" / "clicks").iterdir())
    assert parts and all(p.startswith("part-") and p.endswith(".parquet") for p in parts)
    assert sorted(read_table(tmp_path / "out", "clicks")["item_id"]) == [1, 2]
    assert json.loads((tmp_path / "out" / "attribution.json").read_text())["credited"] == 2
    # no raw clicks at all: an empty credited table, not an error
    assert run_attribution(tmp_path / "nothing", tmp_path / "out2", spark=spark) == AttributionCounts()
    with pytest.raises(ConfigError, match="attribution.window_s"):
        AttributionConfig(window_s=-1)


def _impressions(keys: list[tuple[str, int]], ts: int, arm: str = "champion") -> pd.DataFrame:
    n = len(keys)
    return pd.DataFrame({"request_id": [k for k, _ in keys], "ts": ts, "user_id": 1, "arm": arm,
                         "item_id": [i for _, i in keys], "category_id": 1, "position": list(range(n)),
                         "bid": 1.0, "pctr": 0.1, "cpc": 0.5, "randomisation": "user"})


def test_collect_over_a_sink_log_directory(spark: Any, tmp_path: Path) -> None:
    """Events through the sink's own logic, clicks through POST /clicks' path, then the collect step."""
    from genctr.monitoring.cloudevents_codec import decode_event, encode_request_event, encode_response_event
    from genctr.monitoring.sink.config import SinkConfig
    from genctr.monitoring.sink.service import LogSink

    out = tmp_path / "ab-logs"
    ts = 1_700_000_100
    meta = {"X-Genctr-Randomisation": "user", "X-Genctr-Request-Time": str(ts)}
    body = {"instances": [{"user_id": 5, "candidates": [{"item_id": 1, "category_id": 1, "price": 1.0},
                                                        {"item_id": 2, "category_id": 1, "price": 1.0}]}]}

    async def serve() -> None:
        sink = LogSink(SinkConfig(out=str(out), slots=2))
        await sink.start()
        for ce_id, endpoint in (("c1", "default"), ("c2", "canary")):
            for enc, payload in ((encode_request_event, body), (encode_response_event, {"predictions": [[0.2, 0.1]]})):
                headers, data = enc(ce_id, payload, service="genctr-ctr", endpoint=endpoint, metadata=meta,
                                    time=ts + 0.01)
                assert await sink.accept_event(decode_event(headers, data)) == "accepted"
        clicks = [{"request_id": "c1.0", "item_id": 1, "ts": ts + 5},   # credited
                  {"request_id": "c1.0", "item_id": 1, "ts": ts + 6},   # its double click
                  {"request_id": "c2.0", "item_id": 2, "ts": ts + 90_000},  # after a 24 h window: late
                  {"request_id": "c9.0", "item_id": 1, "ts": ts + 5}]   # never shown: orphan
        assert await sink.accept_clicks(clicks) == {"accepted": 4, "duplicates": 0}
        await sink.stop()

    asyncio.run(serve())
    logs = collect(out, 0, duplicates="refuse")  # a double click is no logging fault here
    assert int(logs.impressions["clicked"].sum()) == 1 and len(logs.impressions) == 4
    assert logs.clicks[["request_id", "item_id", "ts"]].values.tolist() == [["c1.0", 1, ts + 5]]
    assert (logs.quality.orphan_clicks, logs.quality.duplicate_clicks) == (1, 1)
    assert set(logs.requests["arm"]) == {"champion", "canary"}
    summary = collect_to(str(out), 0, tmp_path / "collected", attribution_window_s=100_000)
    assert summary["attribution"]["late"] == 0 and summary["attribution"]["credited"] == 2  # a wider window
    assert json.loads((tmp_path / "collected" / "attribution.json").read_text())["credited"] == 2
    assert summary["clicks"] == {"champion": 1, "canary": 1}
    assert summary["metadata"]["orphan_clicks"] == 1
