"""Adapters from public data formats (and the synthetic world) to canonical events."""
from __future__ import annotations

import dataclasses

import pandas as pd

from genctr.config import DataConfig
from genctr.data.event_time import check_time_unit
from genctr.errors import ConfigError


def load_events(cfg: DataConfig, time_unit: str = "s") -> pd.DataFrame:
    """Canonical, validated events for the configured source (in memory).

    ``time_unit`` (s | ms | us | ns) is the unit of numeric event times in a canonical
    events file; MovieLens, Taobao and the synthetic world are in seconds by definition.
    The behaviour log, if configured, is not read (see :func:`load_source`).
    """
    return load_source(dataclasses.replace(cfg, behaviour_log=False, behaviour_path=""), time_unit)[0]


def load_source(cfg: DataConfig, time_unit: str = "s") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(events, log)`` for the configured source, both validated; ``log`` is None unless
    ``cfg.behaviour_log`` (``genctr.data.behaviours``; a canonical log's times are in ``time_unit`` too)."""
    check_time_unit(time_unit)
    if time_unit != "s" and cfg.source != "events":
        raise ConfigError(f"time_unit={time_unit!r} applies to source 'events' only; "
                          f"{cfg.source} times are seconds by definition")
    if cfg.source == "movielens":
        from genctr.data.sources.movielens import movielens_source

        return movielens_source(cfg.path or None, category=cfg.category, behaviour_log=cfg.behaviour_log)
    if cfg.source == "taobao":
        from genctr.data.sources.taobao import taobao_source

        if not cfg.path:
            raise ConfigError("data.path must name the Taobao UserBehavior CSV file")
        return taobao_source(cfg.path, seed=cfg.seed, behaviour_log=cfg.behaviour_log)
    if cfg.source == "synthetic":  # DataConfig refuses behaviour_log for it
        from genctr.data.sources.synthetic import SyntheticConfig, generate_events_frame

        world = SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items, seed=cfg.seed)
        return generate_events_frame(world, cfg.synthetic_events), None
    from genctr.data.sources.canonical import load_behaviour_log, load_canonical

    if not cfg.path:
        raise ConfigError("data.path must name a canonical events file (Parquet or CSV)")
    events = load_canonical(cfg.path, time_unit=time_unit)
    if not cfg.behaviour_log:
        return events, None
    if cfg.behaviour_path:
        return events, load_behaviour_log(cfg.behaviour_path, time_unit)
    from genctr.data.behaviours import behaviours_path

    hint = " (the default beside data.path; name the log with data.behaviour_path / --behaviour-path)"
    return events, load_behaviour_log(behaviours_path(cfg.path), time_unit, hint=hint)
