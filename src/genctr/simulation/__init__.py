"""Traffic simulation: drive a champion/canary deployment with synthetic ad requests.

Users of a :class:`~genctr.data.sources.synthetic.SyntheticWorld` arrive, each arm scores
their candidate ads (a real KServe v1 endpoint, through the user-hash router or split per
request, or an in-process scorer), a generalised second-price auction shows the best by
pCTR x bid, and the world's ground-truth click model decides the clicks, which go to the A/B
log sink's ``POST /clicks``. The simulator writes no A/B log: the model server's payload logger
(KServe's agent on a cluster) sends every scoring call to the sink, which writes the tables.

* :mod:`~genctr.simulation.config` — :class:`SimulationConfig`
* :mod:`~genctr.simulation.traffic` — :func:`simulate` (a deployment), :func:`run_traffic` (any scorers)
* :mod:`~genctr.simulation.scorers` — :class:`HttpScorer`, :class:`OracleScorer`, :class:`RandomScorer`
* :mod:`~genctr.simulation.clicks` — :class:`ClickSender` (the click tracker)
* :mod:`~genctr.simulation.local_sink` — :class:`LocalSink` (the A/B log sink as a subprocess)
* :mod:`~genctr.simulation.arms` — :func:`assign_users` (stable user split, optional SRM)
* :mod:`~genctr.simulation.entry` — :func:`simulate_deployment` (deployer + replayed world + sink)
"""
from genctr.monitoring.auction import AuctionResult, gsp_auction
from genctr.simulation.arms import assign_users
from genctr.simulation.clicks import ClickSender
from genctr.simulation.config import SimulationConfig
from genctr.simulation.entry import simulate_deployment
from genctr.simulation.local_sink import LocalSink
from genctr.simulation.scorers import (
    STATUS_BAD_RESPONSE,
    STATUS_CONNECTION_ERROR,
    STATUS_TIMEOUT,
    HttpScorer,
    OracleScorer,
    RandomScorer,
    ScoreBatch,
    Scorer,
    ScoreResult,
)
from genctr.simulation.summary import ArmStats, SimulationSummary
from genctr.simulation.traffic import run_traffic, simulate

__all__ = ["STATUS_BAD_RESPONSE", "STATUS_CONNECTION_ERROR", "STATUS_TIMEOUT", "ArmStats", "AuctionResult",
           "ClickSender", "HttpScorer", "LocalSink", "OracleScorer", "RandomScorer", "ScoreBatch", "ScoreResult",
           "Scorer", "SimulationConfig", "SimulationSummary", "assign_users", "gsp_auction", "run_traffic", "simulate",
           "simulate_deployment"]
