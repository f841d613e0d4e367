"""A seeded synthetic world with a known click model.

Users have category preferences that drift over time and a short-term interest state that
is an exponential moving average of the latent vectors of the items they recently clicked.
Items have a category, a latent vector (near their category's centre), a quality and a bid.
The ground-truth click probability

    logit p = bias + quality_i + a_long * <u_long, v_i> + a_short * <h_u, v_i>
              + a_cat * share of category(i) in the user's recent clicks + position effect

depends on the user's recent behaviour sequence (h_u and the category share), so sequence
models have something real to learn.

Two kinds of impression, two click rates. The world's own impressions (the event log the models
train on, and the behaviour sequences GenCTR pretrains on) are a content feed's: ``bias`` gives
about 30 % clicks. An *ad* (what the traffic simulator's auction shows, ``click_prob(..., ad=True)``)
is clicked far less: its logit gets ``ad_logit_offset`` on top, so the ads a trained model's
pCTR x bid ranking picks are clicked at a few per cent, and a canary's A/B test on them has the
statistics of a real one (small rates, heavy differences between users).

Simulation is vectorised over users: each round every user sees one impression; events are
yielded chunk by chunk so tens of millions of events never sit in memory at once. ``true_ctr``
is written beside each event for the simulator.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from genctr.errors import ConfigError


@dataclass
class SyntheticConfig:
    n_users: int = 2_000
    n_items: int = 5_000
    n_cates: int = 50
    dim: int = 8  # latent dimension of users and items
    seed: int = 0
    bias: float = -1.2  # base logit of the world's own (feed) impressions: ~30 % clicks overall
    ad_logit_offset: float = -5.0  # added for an ad (the simulator's auction): the ads a model picks, 1-5 % clicked
    a_long: float = 0.6  # weight of the stable user-item affinity
    a_short: float = 1.2  # weight of the recent-behaviour interest (what sequences reveal)
    a_cat: float = 1.5  # weight of the category's share in recent clicks
    ema: float = 0.3  # how fast the short-term interest follows new clicks
    drift: float = 0.15  # per-round random walk of category preferences
    explore: float = 0.3  # share of impressions from a uniformly random category
    seconds_per_round: int = 3_600
    start_time: int = 1_600_000_000

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_cates", "dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"synthetic.{name} must be positive")
        if self.n_cates > self.n_items:
            raise ConfigError("synthetic.n_cates must not exceed n_items")
        if not 0 < self.ema <= 1 or not 0 <= self.explore <= 1:
            raise ConfigError("synthetic.ema must be in (0, 1] and explore in [0, 1]")
        if not -20.0 <= self.ad_logit_offset <= 0.0:
            raise ConfigError(f"synthetic.ad_logit_offset must be in [-20, 0] (ads are clicked less than the feed, "
                              f"never more), got {self.ad_logit_offset!r}")


@dataclass
class UserState:
    pref: np.ndarray  # (U, C) category preference logits, drifting
    short: np.ndarray  # (U, D) EMA of clicked items' latent vectors
    cat_share: np.ndarray  # (U, C) EMA of clicked categories (rows sum to <= 1)


class SyntheticWorld:
    """Items, users and the ground-truth click model; ids start at 1 (0 is never used)."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        centres = rng.normal(0, 1, (cfg.n_cates, cfg.dim)) / np.sqrt(cfg.dim)
        pop = rng.zipf(1.6, cfg.n_items).clip(max=1_000).astype(float)
        # every category gets at least one item; the rest follow a skewed category size
        cat = np.concatenate([np.arange(cfg.n_cates), rng.choice(cfg.n_cates, cfg.n_items - cfg.n_cates,
                                                                  p=_softmax(rng.normal(0, 1, cfg.n_cates)))])
        self.item_cate = cat.astype(np.int64)  # (I,)
        self.item_vec = centres[cat] + rng.normal(0, 0.5, (cfg.n_items, cfg.dim)) / np.sqrt(cfg.dim)
        self.item_quality = rng.normal(0, 0.4, cfg.n_items)
        self.item_bid = np.round(rng.lognormal(0.0, 0.5, cfg.n_items), 2)
        self.user_vec = rng.normal(0, 1, (cfg.n_users, cfg.dim)) / np.sqrt(cfg.dim) * 2
        self._pref0 = rng.normal(0, 1.5, (cfg.n_users, cfg.n_cates))
        order = np.argsort(cat, kind="stable")
        self._items_by_cat = order
        self._cat_start = np.searchsorted(cat[order], np.arange(cfg.n_cates))
        self._cat_count = np.bincount(cat, minlength=cfg.n_cates)
        self._pop = pop

    # ids exposed to the outside world start at 1
    def item_ids(self, idx: np.ndarray) -> np.ndarray:
        return idx + 1

    def init_state(self) -> UserState:
        c = self.cfg
        return UserState(self._pref0.copy(), np.zeros((c.n_users, c.dim)), np.zeros((c.n_users, c.n_cates)))

    def click_logit(self, state: UserState, users: np.ndarray, items: np.ndarray,
                    position: np.ndarray | None = None, ad: bool = False) -> np.ndarray:
        """Ground-truth click logit for (user, item) pairs; arrays of equal shape (0-based). ``ad``:
        the item is shown as an ad (``ad_logit_offset`` applies), not in the world's own feed."""
        c = self.cfg
        v = self.item_vec[items]
        logit = (c.bias + self.item_quality[items]
                 + c.a_long * np.einsum("...d,...d->...", self.user_vec[users], v)
                 + c.a_short * np.einsum("...d,...d->...", state.short[users], v) * 2
                 + c.a_cat * state.cat_share[users, self.item_cate[items]] * 2)
        if position is not None:
            logit = logit - 0.3 * position  # lower slots are seen less
        return logit + c.ad_logit_offset if ad else logit

    def click_prob(self, state: UserState, users: np.ndarray, items: np.ndarray,
                   position: np.ndarray | None = None, ad: bool = False) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.click_logit(state, users, items, position, ad)))

    def sample_items(self, state: UserState, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What a recommender would show: a category from the user's preferences (or at random), then an item."""
        c = self.cfg
        p = _softmax(state.pref[users], axis=1)
        u = rng.random((len(users), 1))
        cats = (p.cumsum(axis=1) < u).sum(axis=1).clip(max=c.n_cates - 1)
        explore = rng.random(len(users)) < c.explore
        cats = np.where(explore, rng.integers(0, c.n_cates, len(users)), cats)
        pick = (rng.random(len(users)) * self._cat_count[cats]).astype(np.int64)
        return self._items_by_cat[self._cat_start[cats] + pick]

    def update(self, state: UserState, users: np.ndarray, items: np.ndarray, clicks: np.ndarray,
               rng: np.random.Generator) -> None:
        """Clicked items move the short-term state; preferences drift for everyone."""
        c = self.cfg
        cu, ci = users[clicks == 1], items[clicks == 1]
        state.short[cu] = (1 - c.ema) * state.short[cu] + c.ema * self.item_vec[ci]
        state.cat_share[cu] *= 1 - c.ema
        state.cat_share[cu, self.item_cate[ci]] += c.ema
        state.pref[users] += rng.normal(0, c.drift, (len(users), c.n_cates))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


@dataclass
class _Round:
    """One simulated round: ``active`` users (0-based) each saw ``items`` and clicked or not."""

    r: int
    active: np.ndarray  # (B,) user indices
    items: np.ndarray  # (B,) item indices
    p: np.ndarray  # (B,) true click probability
    clicks: np.ndarray  # (B,) int8
    t: np.ndarray  # (B,) event times, epoch seconds


def _rounds(world: SyntheticWorld, state: UserState, rng: np.random.Generator,
            n_events: int) -> Iterator[_Round]:
    """The world's own process, round by round; ``state`` and ``rng`` advance as it goes.

    ``iter_events`` and ``replay_world`` share this loop so a replay consumes the generator in
    exactly the same order as the events were written.
    """
    cfg = world.cfg
    users = np.arange(cfg.n_users)
    n_rounds = -(-n_events // cfg.n_users)
    emitted = 0
    for r in range(n_rounds):
        active = users if emitted + cfg.n_users <= n_events else users[: n_events - emitted]
        items = world.sample_items(state, active, rng)
        p = world.click_prob(state, active, items)
        clicks = (rng.random(len(active)) < p).astype(np.int8)
        world.update(state, active, items, clicks, rng)
        t = cfg.start_time + r * cfg.seconds_per_round + rng.integers(0, cfg.seconds_per_round, len(active))
        emitted += len(active)
        yield _Round(r, active, items, p, clicks, t)


def iter_events(cfg: SyntheticConfig, n_events: int, chunk_rounds: int = 10) -> Iterator[pd.DataFrame]:
    """Yield canonical events (plus ``true_ctr``) in chunks of ``chunk_rounds`` rounds."""
    world = SyntheticWorld(cfg)
    state = world.init_state()
    rng = np.random.default_rng(cfg.seed + 1)
    n_rounds = -(-n_events // cfg.n_users)
    buf: list[pd.DataFrame] = []
    for rd in _rounds(world, state, rng, n_events):
        r, active, items = rd.r, rd.active, rd.items
        buf.append(pd.DataFrame({
            "request_id": np.int64(r) * cfg.n_users + active,
            "user_id": active + 1, "item_id": items + 1,
            "category_id": world.item_cate[items] + 1, "event_time": rd.t.astype(np.int64),
            "clicked": rd.clicks, "price": world.item_bid[items], "position": np.zeros(len(active), np.int32),
            "true_ctr": rd.p,
        }))
        if len(buf) == chunk_rounds or r == n_rounds - 1:
            yield pd.concat(buf, ignore_index=True)
            buf = []


def replay_world(cfg: SyntheticConfig, n_events: int) -> tuple[SyntheticWorld, UserState, np.random.Generator]:
    """The world as it stands after the ``n_events`` events ``iter_events(cfg, n_events)`` yields.

    Returns ``(world, state, rng)``: user state and generator continue exactly where the
    events ended, so traffic simulated afterwards follows the training data in time (the
    next round starts at :func:`end_time`). Nothing is materialised as a frame.
    """
    world = SyntheticWorld(cfg)
    state = world.init_state()
    rng = np.random.default_rng(cfg.seed + 1)
    for _ in _rounds(world, state, rng, n_events):
        pass
    return world, state, rng


def end_time(cfg: SyntheticConfig, n_events: int) -> int:
    """Epoch seconds at which the round after the last of ``n_events`` events starts."""
    return cfg.start_time + (-(-n_events // cfg.n_users)) * cfg.seconds_per_round


def generate_events_frame(cfg: SyntheticConfig, n_events: int) -> pd.DataFrame:
    """All events in one frame (for small worlds; use ``write_events`` for large ones)."""
    return pd.concat(list(iter_events(cfg, n_events)), ignore_index=True)


def write_events(cfg: SyntheticConfig, n_events: int, out_dir: str, chunk_rounds: int = 10) -> int:
    """Write events as a Parquet directory chunk by chunk (replacing ``out_dir``); returns the number written."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from genctr.atomic import publish

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".events-", dir=parent)
    n = 0
    try:
        for i, chunk in enumerate(iter_events(cfg, n_events, chunk_rounds)):
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), f"{tmp}/part-{i:05d}.parquet")
            n += len(chunk)
        publish(Path(tmp), Path(os.path.abspath(out_dir)))  # an existing out_dir is replaced in one step
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
