"""Adapters from public data formats (and the synthetic world) to canonical events."""
from __future__ import annotations

import pandas as pd

from genctr.config import DataConfig
from genctr.data.event_time import check_time_unit
from genctr.errors import ConfigError


def load_events(cfg: DataConfig, time_unit: str = "s") -> pd.DataFrame:
    """Canonical, validated events for the configured source (in memory).

    ``time_unit`` (s | ms | us | ns) is the unit of numeric event times in a canonical
    events file; MovieLens, Taobao and the synthetic world are in seconds by definition.
    """
    check_time_unit(time_unit)
    if time_unit != "s" and cfg.source != "events":
        raise ConfigError(f"time_unit={time_unit!r} applies to source 'events' only; "
                          f"{cfg.source} times are seconds by definition")
    if cfg.source == "movielens":
        from genctr.data.sources.movielens import load_movielens

        return load_movielens(cfg.path or None, category=cfg.category)
    if cfg.source == "taobao":
        from genctr.data.sources.taobao import load_taobao

        if not cfg.path:
            raise ConfigError("data.path must name the Taobao UserBehavior CSV file")
        return load_taobao(cfg.path, seed=cfg.seed)
    if cfg.source == "synthetic":
        from genctr.data.sources.synthetic import SyntheticConfig, generate_events_frame

        world = SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items, seed=cfg.seed)
        return generate_events_frame(world, cfg.synthetic_events)
    from genctr.data.sources.canonical import load_canonical

    if not cfg.path:
        raise ConfigError("data.path must name a canonical events file (Parquet or CSV)")
    return load_canonical(cfg.path, time_unit=time_unit)
