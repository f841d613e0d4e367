"""One call for a command line: attach to a deployment, replay the world, simulate, summarise."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from genctr.data.sources.synthetic import SyntheticConfig, end_time, replay_world
from genctr.deploy.base import Deployer
from genctr.simulation.config import SimulationConfig
from genctr.simulation.summary import SimulationSummary
from genctr.simulation.traffic import simulate

log = logging.getLogger(__name__)


def simulate_deployment(deployer: Deployer, world_cfg: SyntheticConfig, train_events: int, cfg: SimulationConfig,
                        log_dir: str | Path, summary_path: str | Path | None = None) -> SimulationSummary:
    """Simulate traffic against ``deployer``'s current champion/canary split.

    ``world_cfg`` and ``train_events`` must be those the served models' training data were
    generated with: the world is replayed to the end of those events, so users, items and
    their behaviour continue where training stopped (and ``start_ts`` defaults to the round
    after it). ``summary_path``: also write the summary as JSON there.
    """
    status = deployer.status()
    log.info("deployment %s: champion %s, canary %s at %d %%", status.name, status.champion_uri,
             status.canary_uri, status.canary_percent)
    world, state, _ = replay_world(world_cfg, train_events)
    if cfg.start_ts is None:
        cfg = dataclasses.replace(cfg, start_ts=end_time(world_cfg, train_events))
    summary = simulate(status, world, state, cfg, log_dir)
    if summary_path is not None:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(json.dumps(summary.to_dict(), indent=2))
    return summary
