"""Settings of one traffic simulation run."""
from __future__ import annotations

from dataclasses import dataclass

from genctr.errors import ConfigError


@dataclass
class SimulationConfig:
    """How much traffic, how it is batched onto the wire, and how the auction runs.

    One *request* is one ad auction for one user: ``candidates_per_request`` ads are scored by
    the user's arm, ranked by pCTR x bid, and the top ``slots`` are shown. ``instances_per_call``
    requests of the same arm travel in one v1 HTTP call (several ``instances``), and
    ``concurrency`` calls are in flight at once. The A/B log sink replays the auction on what it
    logs, so it must run with the same ``slots`` and ``reserve_price`` (``simulate_deployment``'s
    own sink does).
    """

    n_requests: int = 10_000  # ad requests (auctions) to simulate
    candidates_per_request: int = 20  # ads scored per request
    slots: int = 3  # ads shown per request (the top of the pCTR x bid ranking)
    instances_per_call: int = 32  # requests batched into one HTTP call (v1 "instances")
    concurrency: int = 2  # HTTP calls in flight at once
    seed: int = 0  # users, candidates, clicks and preference drift all follow from it
    srm_skew: float = 0.0  # share of champion-bucket users sent straight to the canary's URL (an SRM on purpose)
    position_effect: bool = True  # lower slots are clicked less (the world's position term)
    reserve_price: float = 0.01  # minimum cpc; ads bidding less are not eligible
    timeout: float = 10.0  # socket timeout of an HTTP call, seconds (connecting, and each read)
    # the request time each call carries (X-Genctr-Request-Time; its clicks get the same): request i
    # happens at start_ts + i // sim_rate; start_ts None: the wall clock at start
    start_ts: int | None = None
    sim_rate: float = 10.0  # simulated requests per second of request time
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        for name in ("n_requests", "candidates_per_request", "slots", "instances_per_call", "concurrency"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"simulation.{name} must be a positive integer, got {value!r}")
        if self.slots > self.candidates_per_request:
            raise ConfigError(f"simulation.slots ({self.slots}) must not exceed candidates_per_request "
                              f"({self.candidates_per_request})")
        if not 0.0 <= self.srm_skew <= 1.0:
            raise ConfigError(f"simulation.srm_skew must be in [0, 1], got {self.srm_skew!r}")
        if not self.reserve_price >= 0.0:
            raise ConfigError(f"simulation.reserve_price must be >= 0, got {self.reserve_price!r}")
        if not self.timeout > 0.0:
            raise ConfigError(f"simulation.timeout must be positive (seconds), got {self.timeout!r}")
        if not self.sim_rate > 0.0:
            raise ConfigError(f"simulation.sim_rate must be positive (requests per second), got {self.sim_rate!r}")
        if self.start_ts is not None and (type(self.start_ts) is not int or self.start_ts < 0):
            raise ConfigError(f"simulation.start_ts must be epoch seconds (int >= 0) or null, got {self.start_ts!r}")
