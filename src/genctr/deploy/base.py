"""The deployment interface the pipeline's deploy step and the canary loop call.

A deployment serves a *champion* (all traffic) and, during a rollout, a *canary* that
receives ``canary_percent`` % of it::

    d.deploy(uri)               champion = uri, no canary (creates the service if needed)
    d.start_canary(uri, 10)     canary = uri at 10 %
    d.start_canary(uri, 50)     same canary, more traffic
    d.promote()                 canary becomes the champion (100 %)
    d.rollback()                canary gets 0 %: all traffic back on the champion
    d.status()                  DeploymentStatus

Implementations: :class:`genctr.deploy.kserve.KServeDeployer` (an InferenceService in
Knative mode, patched through ``KServeClient``) and :class:`genctr.deploy.local.LocalDeployer`
(both models in one local KServe ModelServer process, the split in a JSON state file).

A deployment also records its *randomisation design* (``DeploymentStatus.randomisation``):

* ``"request"``: every HTTP request is split at random, as Knative's ``canaryTrafficPercent``
  does; one user meets both arms, so the analysis unit is the request.
* ``"user"``: each user stays on one arm, :func:`assign_arms` of the user id; clients reach the
  arms through the user-hash router (:mod:`genctr.serving.router`) in front of the arms' own
  URLs (KServe's tag routing); the analysis unit is the user.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from genctr.errors import ConfigError, describe
from genctr.serving.split import assign_arm, assign_arms, unit_hash  # noqa: F401 - part of this interface
from genctr.serving.state import CANARY, CHAMPION, RANDOMISATIONS, check_state  # noqa: F401 - part of this interface

ROUTER = "router"  # DeploymentStatus.urls key of the user-hash router (user-sticky designs)


@dataclass
class DeploymentStatus:
    """Where a deployment stands; ``canary_uri`` is None when no rollout is in progress."""

    name: str
    champion_uri: str | None
    canary_uri: str | None
    canary_percent: int  # 0..100 of the traffic the canary receives
    ready: bool
    urls: dict[str, str] = field(default_factory=dict)  # arm -> URL a client can POST to (+ "router" / "service")
    detail: dict[str, Any] = field(default_factory=dict)  # implementation-specific extras
    # "request": split per HTTP request (Knative canaryTrafficPercent, what a plain InferenceService
    # does); "user": user-sticky through the user-hash router (see the module docstring)
    randomisation: str = "request"


class Deployer(ABC):
    """Champion/canary rollout of model artifacts (``model_uri``: a directory or object-store URI)."""

    @abstractmethod
    def deploy(self, model_uri: str) -> DeploymentStatus:
        """Serve ``model_uri`` as the champion with all traffic (no canary)."""

    @abstractmethod
    def start_canary(self, model_uri: str, percent: int) -> DeploymentStatus:
        """Serve ``model_uri`` beside the champion with ``percent`` % of the traffic (1..99)."""

    @abstractmethod
    def promote(self) -> DeploymentStatus:
        """The canary takes all traffic and becomes the champion."""

    @abstractmethod
    def rollback(self) -> DeploymentStatus:
        """The canary gets 0 %: all traffic goes back to the champion."""

    @abstractmethod
    def status(self) -> DeploymentStatus:
        """The current champion, canary and split."""


def check_percent(percent: Any) -> int:
    if type(percent) is not int or not 1 <= percent <= 99:
        raise ConfigError(f"canary percent must be an integer in 1..99, got {describe(percent)} "
                          "(use promote() for 100 and rollback() for 0)")
    return percent
