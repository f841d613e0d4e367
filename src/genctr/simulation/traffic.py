"""The simulation loop: users arrive, arms score their candidates, a GSP auction shows ads, the
world decides the clicks, and all of it lands in the A/B logs.

Work proceeds in *waves* of ``concurrency x instances_per_call`` requests::

    draw users (B,) and candidates (B, K)   uniform users; K ads each from world.sample_items
    split by arm, chunk into calls          <= instances_per_call requests per v1 call
    score all calls of the wave in parallel thread pool, one keep-alive connection per thread
    auction (B, S), clicks, world.update    vectorised numpy over the wave
    log rows                                buffered, appended every flush_every requests

The world state changes only between waves, so every call of a wave sees the same state and a
run is reproducible for a given seed and set of scores. Users, candidates, clicks and the
preference drift draw from separate streams: two runs with the same seed see the same users
and, because candidates depend only on the drifting preferences, the same candidates, whatever
the arms answer.
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from genctr.data.sources.synthetic import SyntheticWorld, UserState
from genctr.deploy.base import CANARY, CHAMPION, DeploymentStatus
from genctr.errors import ConfigError
from genctr.simulation.arms import assign_users
from genctr.simulation.auction import first_occurrence, gsp_auction
from genctr.simulation.config import SimulationConfig
from genctr.simulation.records import LogBuffer
from genctr.simulation.scorers import STATUS_OK, HttpScorer, ScoreBatch, Scorer, ScoreResult
from genctr.simulation.summary import ArmStats, SimulationSummary

log = logging.getLogger(__name__)


@dataclass
class _Wave:
    first: int  # run-wide index of the wave's first request
    users: np.ndarray  # (B,) 0-based user index
    canary: np.ndarray  # (B,) bool
    items: np.ndarray  # (B, K) 0-based item index


@dataclass
class _Scored:
    status: np.ndarray  # (B,) int32
    latency_ms: np.ndarray  # (B,) float64: the latency of the call the request travelled in
    pctr: np.ndarray  # (B, K) float64, NaN where the call failed


@dataclass
class _Shown:
    """M impressions of a wave, in request order then slot order."""

    req: np.ndarray  # (M,) row of the wave
    item: np.ndarray  # (M,) 0-based item index
    position: np.ndarray  # (M,) 0-based slot
    pctr: np.ndarray  # (M,)
    cpc: np.ndarray  # (M,)
    clicked: np.ndarray  # (M,) bool


def simulate(status: DeploymentStatus, world: SyntheticWorld, state: UserState, cfg: SimulationConfig,
             log_dir: str | Path) -> SimulationSummary:
    """Drive the deployment's arms (``status.urls``, split by ``status.canary_percent``) with
    simulated traffic; ``state`` is advanced in place. See :func:`run_traffic`."""
    if CHAMPION not in status.urls:
        raise ConfigError(f"deployment {status.name!r} has no champion URL: deploy a model first")
    if not status.ready:
        log.warning("deployment %s is not ready; failed calls will be logged with their status", status.name)
    scorers: dict[str, Scorer] = {arm: HttpScorer(url, cfg.timeout) for arm, url in status.urls.items()
                                  if arm in (CHAMPION, CANARY)}
    try:
        return run_traffic(scorers, status.canary_percent, world, state, cfg, log_dir)
    finally:
        for s in scorers.values():
            s.close()


def run_traffic(scorers: Mapping[str, Scorer], canary_percent: int, world: SyntheticWorld, state: UserState,
                cfg: SimulationConfig, log_dir: str | Path) -> SimulationSummary:
    """Simulate ``cfg.n_requests`` ad requests against ``scorers`` (arm -> scorer) and append
    them to the A/B logs in ``log_dir``; ``state`` is advanced in place."""
    user_canary = assign_users(np.arange(world.cfg.n_users, dtype=np.int64) + 1, canary_percent,
                               cfg.srm_skew, cfg.seed)  # (U,)
    if CHAMPION not in scorers:
        raise ConfigError("no champion scorer: the champion takes every request outside the canary")
    if user_canary.any() and CANARY not in scorers:
        raise ConfigError(f"canary_percent is {canary_percent} and srm_skew {cfg.srm_skew}, "
                          "but there is no canary to send that traffic to")
    traffic_rng, click_rng, drift_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3))
    start_ts = int(time.time()) if cfg.start_ts is None else cfg.start_ts
    summary = SimulationSummary(run_id=uuid.uuid4().hex[:12], log_dir=str(log_dir), start_ts=start_ts)
    buffer = LogBuffer(log_dir, cfg.flush_every)
    wave_size = cfg.concurrency * cfg.instances_per_call
    reported: set[tuple[str, int]] = set()
    log.info("simulating %d requests (canary %d %%, srm_skew %.3f, %d users on the canary) into %s [run %s]",
             cfg.n_requests, canary_percent, cfg.srm_skew, int(user_canary.sum()), log_dir, summary.run_id)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.n_requests, unit="req", desc="simulate", disable=not cfg.progress,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="simulate") as pool:
            for first in range(0, cfg.n_requests, wave_size):
                wave = _draw_wave(world, state, user_canary, first, min(wave_size, cfg.n_requests - first),
                                  cfg.candidates_per_request, traffic_rng)
                scored = _score_wave(pool, scorers, world, wave, cfg.instances_per_call, reported)
                shown = _serve(world, state, wave, scored, cfg, click_rng, drift_rng)
                ts = start_ts + ((first + np.arange(len(wave.users))) // cfg.sim_rate).astype(np.int64)  # (B,)
                buffer.add(*_frames(world, wave, scored, shown, ts, summary.run_id, cfg.candidates_per_request))
                summary.add(wave.canary, scored.status != STATUS_OK, scored.latency_ms, wave.canary[shown.req],
                            shown.clicked, shown.cpc)
                summary.end_ts = int(ts[-1])
                bar.update(len(wave.users))
    finally:
        bar.close()
        buffer.flush()  # what was simulated is logged, also when interrupted
    summary.wall_seconds = time.perf_counter() - t0
    _log_summary(summary)
    return summary


def _draw_wave(world: SyntheticWorld, state: UserState, user_canary: np.ndarray, first: int, size: int, k: int,
               rng: np.random.Generator) -> _Wave:
    users = rng.integers(0, world.cfg.n_users, size)  # (B,)
    items = world.sample_items(state, np.repeat(users, k), rng).reshape(size, k)  # (B, K)
    return _Wave(first, users, user_canary[users], items)


def _score_wave(pool: ThreadPoolExecutor, scorers: Mapping[str, Scorer], world: SyntheticWorld, wave: _Wave,
                per_call: int, reported: set[tuple[str, int]]) -> _Scored:
    """One call per ``per_call`` requests of an arm, all in flight at once; results scattered back."""
    b, k = wave.items.shape
    calls: list[tuple[str, np.ndarray, Future[ScoreResult]]] = []
    for arm, mask in ((CHAMPION, ~wave.canary), (CANARY, wave.canary)):
        rows = np.flatnonzero(mask)
        for start in range(0, len(rows), per_call):
            chunk = rows[start:start + per_call]
            items = wave.items[chunk]  # (n, K)
            batch = ScoreBatch(user_ids=wave.users[chunk] + 1, item_ids=world.item_ids(items),
                               category_ids=world.item_cate[items] + 1, prices=world.item_bid[items])
            calls.append((arm, chunk, pool.submit(scorers[arm].score, batch)))
    out = _Scored(np.zeros(b, np.int32), np.zeros(b), np.full((b, k), np.nan))
    for arm, chunk, fut in calls:
        res = fut.result()
        out.status[chunk] = res.status
        out.latency_ms[chunk] = res.latency_ms
        if res.status == STATUS_OK and res.pctr is not None:
            out.pctr[chunk] = res.pctr
        elif (arm, res.status) not in reported:  # once per arm and status; the log has every one
            reported.add((arm, res.status))
            log.warning("%s scoring call failed with status %d: %s", arm, res.status, res.error)
    return out


def _serve(world: SyntheticWorld, state: UserState, wave: _Wave, scored: _Scored, cfg: SimulationConfig,
           click_rng: np.random.Generator, drift_rng: np.random.Generator) -> _Shown:
    """Auction the scored requests, draw clicks from the true model, update the world."""
    ok = np.flatnonzero(scored.status == STATUS_OK)  # (b_ok,)
    items = wave.items[ok]  # (b_ok, K)
    bid = world.item_bid[items]
    auction = gsp_auction(scored.pctr[ok], bid, cfg.slots, cfg.reserve_price, first_occurrence(items))
    r, pos = np.nonzero(auction.shown)  # (M,) each; row-major: request order, then slot order
    col = auction.column[r, pos]
    req = ok[r]
    item = items[r, col]
    users = wave.users[req]
    p_true = world.click_prob(state, users, item, pos if cfg.position_effect else None)  # (M,)
    clicked = click_rng.random(len(item)) < p_true
    # one impression per row: a user shown several ads drifts once (duplicate indices collapse)
    world.update(state, users, item, clicked.astype(np.int8), drift_rng)
    return _Shown(req, item, pos.astype(np.int32), scored.pctr[req, col], auction.cpc[r, pos], clicked)


def _frames(world: SyntheticWorld, wave: _Wave, scored: _Scored, shown: _Shown, ts: np.ndarray, run_id: str,
            n_candidates: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The wave's rows of the requests, impressions and clicks tables (monitoring.logs schema)."""
    b = len(wave.users)
    request_id = (run_id + "-" + pd.Series(wave.first + np.arange(b)).astype(str)).to_numpy()  # (B,)
    arm = np.where(wave.canary, CANARY, CHAMPION)
    user_id = wave.users.astype(np.int64) + 1
    requests = pd.DataFrame({"request_id": request_id, "ts": ts, "user_id": user_id, "arm": arm,
                             "status": scored.status, "latency_ms": scored.latency_ms,
                             "n_candidates": np.full(b, n_candidates, np.int32), "randomisation": "user"})
    item_id = world.item_ids(shown.item).astype(np.int64)
    impressions = pd.DataFrame({"request_id": request_id[shown.req], "ts": ts[shown.req],
                                "user_id": user_id[shown.req], "arm": arm[shown.req], "item_id": item_id,
                                "category_id": world.item_cate[shown.item] + 1, "position": shown.position,
                                "bid": world.item_bid[shown.item], "pctr": shown.pctr, "cpc": shown.cpc,
                                "randomisation": "user"})
    c = shown.clicked
    clicks = pd.DataFrame({"request_id": request_id[shown.req][c], "item_id": item_id[c], "ts": ts[shown.req][c]})
    return requests, impressions, clicks


def _log_summary(s: SimulationSummary) -> None:
    def line(arm: str, a: ArmStats) -> str:
        return (f"{arm}: {a.requests} requests ({a.errors} failed), {a.impressions} impressions, "
                f"{a.clicks} clicks, CTR {a.ctr:.4f}, RPM {a.rpm:.2f}, latency {a.mean_latency_ms:.1f} ms")

    log.info("simulated %d requests in %.1f s (%.0f requests/s); %s; %s", s.requests, s.wall_seconds,
             s.requests_per_second, line(CHAMPION, s.arms[CHAMPION]), line(CANARY, s.arms[CANARY]))
