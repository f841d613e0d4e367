"""One call for a command line: attach to a deployment, replay the world, simulate, summarise.

The A/B logs of the run come the way they come on a cluster: the model server's payload logger
(KServe's agent there) posts every scoring call to the A/B log sink, the simulated click tracker
posts the clicks, and the sink writes the tables. For a local deployment without a sink of its
own, :func:`simulate_deployment` starts one (a subprocess, :class:`~genctr.simulation.local_sink.
LocalSink`) writing ``log_dir``, points the deployment's payload logger at it, and stops it once
every event is delivered. The canary step then reads ``log_dir`` (and attributes its raw clicks).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

from genctr.data.sources.synthetic import SyntheticConfig, SyntheticWorld, UserState, end_time, replay_world
from genctr.deploy.base import Deployer
from genctr.errors import ConfigError, GenCTRError
from genctr.simulation.config import SimulationConfig
from genctr.simulation.local_sink import LocalSink, port_is_free, wait_sink_idle
from genctr.simulation.summary import SimulationSummary
from genctr.simulation.traffic import simulate

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT_S = 300.0  # how long the server's payload logger may take to empty its queue after a run


def simulate_deployment(deployer: Deployer, world_cfg: SyntheticConfig, train_events: int, cfg: SimulationConfig,
                        log_dir: str | Path, summary_path: str | Path | None = None, *,
                        sink_url: str = "") -> SimulationSummary:
    """Simulate traffic against ``deployer``'s current champion/canary split; the sink writes ``log_dir``.

    ``world_cfg`` and ``train_events`` must be those the served models' training data were
    generated with: the world is replayed to the end of those events, so users, items and
    their behaviour continue where training stopped (and ``start_ts`` defaults to the round
    after it). ``sink_url``: a running sink the deployment already logs to (it writes where it
    was told, ``log_dir`` is then only informative); '' = a sink for this run, local deployments
    only. ``summary_path``: also write the summary as JSON there.
    """
    world, state, _ = replay_world(world_cfg, train_events)
    if cfg.start_ts is None:
        cfg = dataclasses.replace(cfg, start_ts=end_time(world_cfg, train_events))
    from genctr.deploy.local import LocalDeployer

    local = deployer if isinstance(deployer, LocalDeployer) else None
    if sink_url:
        if local is not None:
            local.use_logger(sink_url)  # restarts the server only if it logged elsewhere
        summary = _run(deployer, world, state, cfg, sink_url)
        if not wait_sink_idle(sink_url, DELIVERY_TIMEOUT_S):
            log.warning("the sink at %s still buffers rows or unpaired events after the run", sink_url)
    else:
        if local is None:
            raise ConfigError("a cluster deployment logs through KServe's agent to its own A/B log sink: "
                              "pass that sink's URL (sink_url) for the clicks")
        port = reusable_sink_port(local)
        with LocalSink(log_dir, port=port, slots=cfg.slots, reserve_price=cfg.reserve_price) as sink:
            local.use_logger(sink.url)
            summary = _run(local, world, state, cfg, sink.url)
        # leaving the block stopped the sink: it wrote everything it had paired
    if summary_path is not None:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def _run(deployer: Deployer, world: SyntheticWorld, state: UserState, cfg: SimulationConfig,
         sink_url: str) -> SimulationSummary:
    from genctr.serving.payload_logger import wait_delivered

    status = deployer.status()
    log.info("deployment %s (%s-randomised): champion %s, canary %s at %d %%; sink %s", status.name,
             status.randomisation, status.champion_uri, status.canary_uri, status.canary_percent, sink_url)
    summary = simulate(status, world, state, cfg, f"{sink_url.rstrip('/')}/clicks")
    server = status.detail.get("server") or {}
    if server.get("port") and not wait_delivered(f"http://{server.get('host', '127.0.0.1')}:{server['port']}",
                                                 DELIVERY_TIMEOUT_S):
        raise GenCTRError(f"the model server's payload logger did not deliver its events to {sink_url} within "
                          f"{DELIVERY_TIMEOUT_S:.0f} s: is the sink up? (its log is beside {sink_url})")
    return summary


def reusable_sink_port(deployer: Deployer) -> int:
    """The port of the sink the deployment already logs to, when nothing listens there: a new sink on
    it is the same address (as a Service's), so the server keeps its logger and needs no restart."""
    try:
        logger = deployer.status().detail.get("logger") or {}
    except ConfigError:
        return 0
    parts = urlsplit(str(logger.get("url", "")))
    if parts.hostname in ("127.0.0.1", "localhost") and parts.port and port_is_free(parts.port):
        return parts.port
    return 0
