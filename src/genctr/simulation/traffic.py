"""The simulation loop: users arrive, arms score their candidates, a GSP auction shows ads, the
world decides the clicks, and the clicks are reported to the A/B log sink.

The simulator is an ad server and a click tracker, nothing more: it does not write the A/B logs.
The model server's payload logger (KServe's agent on a cluster) posts every scoring call to the
sink, which derives requests and impressions by the same auction rule; the simulator reports
the clicks (``POST /clicks``). Every call carries ``X-Request-Id`` = ``Ce-Id`` = the call's id
(the sink keys the call's ad requests ``f"{id}.{instance}"``, and so do the clicks), the
randomisation design and the request time (:mod:`genctr.monitoring.headers`).

Work proceeds in *waves* of ``concurrency x instances_per_call`` requests::

    draw users (B,) and candidates (B, K)   uniform users; K ads each from world.sample_items
    route, chunk into calls                 <= instances_per_call requests of one arm per v1 call
    score all calls of the wave in parallel thread pool, one keep-alive connection per thread
    auction (B, S), clicks, world.update    vectorised numpy over the wave; clicks at the world's ad rates
    clicks to the sink                      one POST per wave, retried until acknowledged

Routing by the deployment's design (``DeploymentStatus.randomisation``): ``user``: every call
goes to the user-hash router, its users grouped by :func:`genctr.deploy.base.assign_arms` (the
router's own function) so no call mixes arms; ``request``: each ad request draws its arm (canary
with probability ``canary_percent`` / 100), as Knative draws one for each HTTP request, and the
requests of one arm travel together to its URL (batching is transport: the unit the analysis and
its sample-ratio check count, the ad request, is randomised on its own).
``srm_skew`` (a broken split on purpose) sends a share of champion-bucket users straight to the
canary's own URL, as a client that found the canary's tag URL would.

The world state changes only between waves, so every call of a wave sees the same state and a
run is reproducible for a given seed and set of scores. Users, candidates, clicks, the arm
draws and the preference drift draw from separate streams: two runs with the same seed see the
same users and, because candidates depend only on the drifting preferences, the same
candidates, whatever the arms answer.
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from genctr.data.sources.synthetic import SyntheticWorld, UserState
from genctr.deploy.base import CANARY, CHAMPION, RANDOMISATIONS, DeploymentStatus
from genctr.errors import ConfigError
from genctr.monitoring.auction import first_occurrence, gsp_auction
from genctr.monitoring.headers import RANDOMISATION_HEADER, REQUEST_TIME_HEADER
from genctr.simulation.arms import assign_users, leaked_users
from genctr.simulation.clicks import ClickSender
from genctr.simulation.config import SimulationConfig
from genctr.simulation.scorers import STATUS_OK, HttpScorer, ScoreBatch, Scorer, ScoreResult
from genctr.simulation.summary import ArmStats, SimulationSummary

log = logging.getLogger(__name__)
ROUTER = "router"  # scorer key of the user-hash router (genctr.deploy.local.ROUTER)
REQUEST_ID_HEADERS = ("X-Request-Id", "Ce-Id")  # the call's id: KServe's agent takes the event id from Ce-Id


@dataclass
class _Wave:
    first: int  # run-wide index of the wave's first request
    users: np.ndarray  # (B,) 0-based user index
    items: np.ndarray  # (B, K) 0-based item index


@dataclass
class _Calls:
    """How a wave travels: per request, its call and its place in it; per call, route and id."""

    canary: np.ndarray  # (B,) bool: the arm that serves the request
    call: np.ndarray  # (B,) int: index of the request's call in ``ids``
    slot: np.ndarray  # (B,) int: the request's instance index in its call
    ids: list[str]  # (C,) call ids (X-Request-Id = Ce-Id)
    routes: list[str]  # (C,) scorer key: "router" | "champion" | "canary"
    rows: list[np.ndarray]  # (C,) wave rows of each call, instance order
    ts: np.ndarray  # (C,) int64 request time of each call, epoch seconds


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
    cpc: np.ndarray  # (M,)
    clicked: np.ndarray  # (M,) bool


def simulate(status: DeploymentStatus, world: SyntheticWorld, state: UserState, cfg: SimulationConfig,
             clicks_url: str) -> SimulationSummary:
    """Drive the deployment (``status.urls``, its design and split) with simulated traffic and report
    the clicks to the sink at ``clicks_url``; ``state`` is advanced in place. See :func:`run_traffic`."""
    if CHAMPION not in status.urls:
        raise ConfigError(f"deployment {status.name!r} has no champion URL: deploy a model first")
    if status.randomisation == "user" and ROUTER not in status.urls:
        raise ConfigError(f"deployment {status.name!r} is user-randomised but has no router URL: start it "
                          "(LocalDeployer.ensure_running) or deploy with randomisation='request'")
    if not status.ready:
        log.warning("deployment %s is not ready; failed calls are counted in the summary", status.name)
    keys = (ROUTER, CHAMPION, CANARY) if status.randomisation == "user" else (CHAMPION, CANARY)
    scorers: dict[str, Scorer] = {k: HttpScorer(status.urls[k], cfg.timeout) for k in keys if k in status.urls}
    clicks = ClickSender(clicks_url, cfg.timeout)
    try:
        return run_traffic(scorers, status.canary_percent, world, state, cfg, clicks=clicks,
                           randomisation=status.randomisation)
    finally:
        clicks.close()
        for s in scorers.values():
            s.close()


def run_traffic(scorers: Mapping[str, Scorer], canary_percent: int, world: SyntheticWorld, state: UserState,
                cfg: SimulationConfig, *, clicks: ClickSender | None = None,
                randomisation: str = "user") -> SimulationSummary:
    """Simulate ``cfg.n_requests`` ad requests against ``scorers`` (``"champion"``, ``"canary"`` and,
    user-randomised, ``"router"``: then every call but the leaked users' goes there); report the
    clicks to ``clicks`` (None: only count them). ``state`` is advanced in place."""
    if randomisation not in RANDOMISATIONS:
        raise ConfigError(f"randomisation must be one of {list(RANDOMISATIONS)}, got {randomisation!r}")
    ids = np.arange(world.cfg.n_users, dtype=np.int64) + 1
    user_canary = assign_users(ids, canary_percent, cfg.srm_skew, cfg.seed)  # (U,) where user-level traffic lands
    leaked = leaked_users(ids, cfg.srm_skew, cfg.seed) & ~assign_users(ids, canary_percent)  # (U,) bypass the split
    if CHAMPION not in scorers:
        raise ConfigError("no champion scorer: the champion takes every request outside the canary")
    if (canary_percent > 0 or leaked.any()) and CANARY not in scorers:
        raise ConfigError(f"canary_percent is {canary_percent} and srm_skew {cfg.srm_skew}, "
                          "but there is no canary to send that traffic to")
    traffic_rng, click_rng, drift_rng, arm_rng = (np.random.default_rng(s)
                                                  for s in np.random.SeedSequence(cfg.seed).spawn(4))
    start_ts = int(time.time()) if cfg.start_ts is None else cfg.start_ts
    summary = SimulationSummary(run_id=uuid.uuid4().hex[:12], clicks_url=clicks.url if clicks else "",
                                randomisation=randomisation, start_ts=start_ts)
    wave_size = cfg.concurrency * cfg.instances_per_call
    reported: set[tuple[str, int]] = set()
    n_calls = 0
    log.info("simulating %d requests (%s-randomised, canary %d %%, srm_skew %.3f) [run %s]", cfg.n_requests,
             randomisation, canary_percent, cfg.srm_skew, summary.run_id)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.n_requests, unit="req", desc="simulate", disable=not cfg.progress,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="simulate") as pool:
            for first in range(0, cfg.n_requests, wave_size):
                wave = _draw_wave(world, state, first, min(wave_size, cfg.n_requests - first),
                                  cfg.candidates_per_request, traffic_rng)
                calls = _route(wave, user_canary, leaked, canary_percent, randomisation, ROUTER in scorers, cfg,
                               start_ts, f"{summary.run_id}-", n_calls, arm_rng)
                n_calls += len(calls.ids)
                scored = _score_wave(pool, scorers, world, wave, calls, randomisation, reported)
                shown = _serve(world, state, wave, scored, cfg, click_rng, drift_rng)
                if clicks is not None:
                    c = shown.clicked
                    clicks.send(_request_ids(calls, shown.req[c]), world.item_ids(shown.item[c]),
                                calls.ts[calls.call[shown.req[c]]])
                summary.add(calls.canary, scored.status != STATUS_OK, scored.latency_ms, calls.canary[shown.req],
                            shown.clicked, shown.cpc)
                summary.calls, summary.end_ts = n_calls, int(calls.ts.max())
                bar.update(len(wave.users))
    finally:
        bar.close()
    summary.wall_seconds = time.perf_counter() - t0
    _log_summary(summary)
    return summary


def _draw_wave(world: SyntheticWorld, state: UserState, first: int, size: int, k: int,
               rng: np.random.Generator) -> _Wave:
    users = rng.integers(0, world.cfg.n_users, size)  # (B,)
    items = world.sample_items(state, np.repeat(users, k), rng).reshape(size, k)  # (B, K)
    return _Wave(first, users, items)


def _route(wave: _Wave, user_canary: np.ndarray, leaked: np.ndarray, percent: int, randomisation: str,
           via_router: bool, cfg: SimulationConfig, start_ts: int, prefix: str, first_call: int,
           arm_rng: np.random.Generator) -> _Calls:
    """Group the wave's requests into calls of one arm each (the module docstring's routing)."""
    b = len(wave.users)
    leak = leaked[wave.users]  # (B,)
    if randomisation == "user":
        on_canary = user_canary[wave.users]  # (B,)
        entry = ROUTER if via_router else ""
    else:  # request: an independent draw per ad request
        on_canary = arm_rng.random(b) * 100 < percent  # (B,)
        entry = ""
    groups = [(CANARY, CANARY, leak), (CHAMPION, entry or CHAMPION, ~on_canary & ~leak),
              (CANARY, entry or CANARY, on_canary & ~leak)]
    canary = np.zeros(b, bool)
    call = np.zeros(b, np.int64)
    slot = np.zeros(b, np.int64)
    ids: list[str] = []
    routes: list[str] = []
    rows: list[np.ndarray] = []
    for arm, route, mask in groups:
        members = np.flatnonzero(mask)
        for start in range(0, len(members), cfg.instances_per_call):
            chunk = members[start:start + cfg.instances_per_call]
            canary[chunk] = arm == CANARY
            call[chunk], slot[chunk] = len(ids), np.arange(len(chunk))
            ids.append(f"{prefix}{first_call + len(ids)}")
            routes.append(route)
            rows.append(chunk)
    # a call's request time: its first request's place in the run, at sim_rate requests a second
    ts = np.array([start_ts + (wave.first + int(r[0])) // cfg.sim_rate for r in rows], np.int64)  # (C,)
    return _Calls(canary, call, slot, ids, routes, rows, ts)


def _request_ids(calls: _Calls, rows: np.ndarray) -> np.ndarray:
    """(n,) the sink's ad-request ids ``f"{call id}.{instance}"`` of wave ``rows``."""
    return np.array([f"{calls.ids[c]}.{s}" for c, s in zip(calls.call[rows].tolist(), calls.slot[rows].tolist(),
                                                              strict=True)], dtype=object)


def _score_wave(pool: ThreadPoolExecutor, scorers: Mapping[str, Scorer], world: SyntheticWorld, wave: _Wave,
                calls: _Calls, randomisation: str, reported: set[tuple[str, int]]) -> _Scored:
    """Every call of the wave in flight at once; results scattered back to the requests."""
    b, k = wave.items.shape
    futures: list[tuple[str, np.ndarray, Future[ScoreResult]]] = []
    for cid, route, chunk, ts in zip(calls.ids, calls.routes, calls.rows, calls.ts.tolist(), strict=True):
        items = wave.items[chunk]  # (n, K)
        batch = ScoreBatch(user_ids=wave.users[chunk] + 1, item_ids=world.item_ids(items),
                           category_ids=world.item_cate[items] + 1, prices=world.item_bid[items])
        headers = {**dict.fromkeys(REQUEST_ID_HEADERS, cid), RANDOMISATION_HEADER: randomisation,
                   REQUEST_TIME_HEADER: str(ts)}
        futures.append((route, chunk, pool.submit(scorers[route].score, batch, headers)))
    out = _Scored(np.zeros(b, np.int32), np.zeros(b), np.full((b, k), np.nan))
    for route, chunk, fut in futures:
        res = fut.result()
        out.status[chunk] = res.status
        out.latency_ms[chunk] = res.latency_ms
        if res.status == STATUS_OK and res.pctr is not None:
            out.pctr[chunk] = res.pctr
        elif (route, res.status) not in reported:  # once per route and status; the summary counts every one
            reported.add((route, res.status))
            log.warning("%s scoring call failed with status %d: %s", route, res.status, res.error)
    return out


def _serve(world: SyntheticWorld, state: UserState, wave: _Wave, scored: _Scored, cfg: SimulationConfig,
           click_rng: np.random.Generator, drift_rng: np.random.Generator) -> _Shown:
    """Auction the scored requests (the sink replays the same rule), draw clicks from the true model,
    update the world."""
    ok = np.flatnonzero(scored.status == STATUS_OK)  # (b_ok,)
    items = wave.items[ok]  # (b_ok, K)
    bid = world.item_bid[items]
    auction = gsp_auction(scored.pctr[ok], bid, cfg.slots, cfg.reserve_price, first_occurrence(world.item_ids(items)))
    r, pos = np.nonzero(auction.shown)  # (M,) each; row-major: request order, then slot order
    col = auction.column[r, pos]
    req = ok[r]
    item = items[r, col]
    users = wave.users[req]
    p_true = world.click_prob(state, users, item, pos if cfg.position_effect else None, ad=True)  # (M,): ads
    clicked = click_rng.random(len(item)) < p_true
    # one impression per row: a user shown several ads drifts once (duplicate indices collapse)
    world.update(state, users, item, clicked.astype(np.int8), drift_rng)
    return _Shown(req, item, pos.astype(np.int32), auction.cpc[r, pos], clicked)


def _log_summary(s: SimulationSummary) -> None:
    def line(arm: str, a: ArmStats) -> str:
        return (f"{arm}: {a.requests} requests ({a.errors} failed), {a.impressions} impressions, "
                f"{a.clicks} clicks, CTR {a.ctr:.4f}, RPM {a.rpm:.2f}, latency {a.mean_latency_ms:.1f} ms")

    log.info("simulated %d requests in %d calls, %.1f s (%.0f requests/s); %s; %s", s.requests, s.calls,
             s.wall_seconds, s.requests_per_second, line(CHAMPION, s.arms[CHAMPION]), line(CANARY, s.arms[CANARY]))
