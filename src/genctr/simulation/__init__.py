"""Traffic simulation: drive a champion/canary deployment with synthetic ad requests.

Users of a :class:`~genctr.data.sources.synthetic.SyntheticWorld` arrive, each arm scores
their candidate ads (a real KServe v1 endpoint, or an in-process scorer), a generalised
second-price auction shows the best by pCTR x bid, the world's ground-truth click model
decides the clicks, and every request, impression and click is appended to the A/B logs
of :mod:`genctr.monitoring.logs`.

* :mod:`~genctr.simulation.config` — :class:`SimulationConfig`
* :mod:`~genctr.simulation.traffic` — :func:`simulate` (a deployment), :func:`run_traffic` (any scorers)
* :mod:`~genctr.simulation.scorers` — :class:`HttpScorer`, :class:`OracleScorer`, :class:`RandomScorer`
* :mod:`~genctr.simulation.auction` — :func:`gsp_auction`
* :mod:`~genctr.simulation.arms` — :func:`assign_users` (stable user split, optional SRM)
* :mod:`~genctr.simulation.entry` — :func:`simulate_deployment` (deployer + replayed world)
"""
from genctr.simulation.arms import assign_users
from genctr.simulation.auction import AuctionResult, gsp_auction
from genctr.simulation.config import SimulationConfig
from genctr.simulation.entry import simulate_deployment
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
           "HttpScorer", "OracleScorer", "RandomScorer", "ScoreBatch", "ScoreResult", "Scorer", "SimulationConfig",
           "SimulationSummary", "assign_users", "gsp_auction", "run_traffic", "simulate", "simulate_deployment"]
