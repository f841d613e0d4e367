"""Counts of a simulation run, per arm: what the simulator sent and saw, not what the sink logged.

The A/B logs are the sink's (:mod:`genctr.monitoring.sink`); these figures are the client's side
of the same traffic, which an end-to-end test reconciles with them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from genctr.serving.state import ARMS, CANARY, CHAMPION


@dataclass
class ArmStats:
    requests: int = 0  # auctions (ad requests) routed to the arm
    errors: int = 0  # of which the scoring call failed (no impressions)
    impressions: int = 0
    clicks: int = 0
    revenue: float = 0.0  # sum of cpc over clicks
    latency_ms_sum: float = 0.0  # per-request client latency, summed (a call's latency counts once per request)

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")

    @property
    def rpm(self) -> float:
        """Revenue per 1000 requests (failed ones included: they earn nothing)."""
        return 1000.0 * self.revenue / self.requests if self.requests else float("nan")

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_sum / self.requests if self.requests else float("nan")


@dataclass
class SimulationSummary:
    run_id: str  # prefix of every call id (X-Request-Id / Ce-Id: f"{run_id}-{n}") of the run
    clicks_url: str = ""  # where the clicks were reported ('' = nowhere: counted only)
    randomisation: str = "user"  # how calls were routed: "user" (the router) | "request" (per call)
    arms: dict[str, ArmStats] = field(default_factory=lambda: {a: ArmStats() for a in ARMS})
    calls: int = 0  # scoring calls (HTTP requests) sent
    wall_seconds: float = 0.0
    start_ts: int = 0  # ts of the first request
    end_ts: int = 0  # ts of the last request

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.arms.values())

    @property
    def errors(self) -> int:
        return sum(a.errors for a in self.arms.values())

    @property
    def clicks(self) -> int:
        return sum(a.clicks for a in self.arms.values())

    @property
    def revenue(self) -> float:
        return sum(a.revenue for a in self.arms.values())

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def add(self, canary: np.ndarray, failed: np.ndarray, latency_ms: np.ndarray, imp_canary: np.ndarray,
            clicked: np.ndarray, cpc: np.ndarray) -> None:
        """Accumulate one wave: per-request (B,) arrays, then per-impression (M,) arrays."""
        for arm, is_arm, imp_arm in ((CHAMPION, ~canary, ~imp_canary), (CANARY, canary, imp_canary)):
            s = self.arms[arm]
            s.requests += int(is_arm.sum())
            s.errors += int((failed & is_arm).sum())
            s.latency_ms_sum += float(latency_ms[is_arm].sum())
            s.impressions += int(imp_arm.sum())
            s.clicks += int((clicked & imp_arm).sum())
            s.revenue += float(cpc[clicked & imp_arm].sum())

    def to_dict(self) -> dict[str, Any]:
        arms = {a: {**asdict(s), "ctr": s.ctr, "rpm": s.rpm, "mean_latency_ms": s.mean_latency_ms}
                for a, s in self.arms.items()}
        return {"run_id": self.run_id, "clicks_url": self.clicks_url, "randomisation": self.randomisation,
                "requests": self.requests, "calls": self.calls, "errors": self.errors,
                "clicks": self.clicks, "revenue": self.revenue, "wall_seconds": self.wall_seconds,
                "requests_per_second": self.requests_per_second, "start_ts": self.start_ts,
                "end_ts": self.end_ts, "arms": arms}
