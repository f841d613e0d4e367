"""Shared heavy fixture of the canary tests: planted models behind a real local ModelServer.

On the session's synthetic world (conftest ``synthetic_build``): a trained dcnv2_ta model, a
``random`` copy with its weights drowned in noise and a ``twin`` as good as the trained one,
all registered as ``ctr`` versions; the build materialised into a SQLite Feast store; and one
:class:`~genctr.deploy.local.LocalDeployer` named ``ctr`` whose state file is
``<root>/deploy/ctr.json``, so ``DeployTarget(kind="local", name="ctr", state_dir=<root>/deploy)``
(pipelines, CLI) reaches the same deployment. Built once per test session; the server is
stopped when the session ends. Every test sets the deployment's state up itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import pytest

from genctr.simulation import SimulationConfig

MODEL = "ctr"  # registered name and deployment name
_CACHE: dict[str, dict[str, Any]] = {}


def canary_world(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                 config: pytest.Config) -> dict[str, Any]:
    """``{"root", "reg", "v": {name: version}, "deployer", "state_dir", "world", "n_events"}``."""
    if "ctx" not in _CACHE:
        _CACHE["ctx"] = _build(synthetic_build, tmp_path_factory)
        config.add_cleanup(_CACHE["ctx"]["deployer"].shutdown)
    return _CACHE["ctx"]


def _build(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from serving_fixtures import perturbed_copy

    from genctr.deploy.local import LocalDeployer
    from genctr.features.feast_sync import materialize
    from genctr.registry import ModelRegistry
    from genctr.serving.online import FeastConfig
    from genctr.training.run import finetune

    root = tmp_path_factory.mktemp("canary-loop")
    build = synthetic_build["build"]
    # test AUC ~0.74, gAUC ~0.72 on this world (the ground truth's is ~0.84)
    finetune(build, root / "trained", {"max_seq_len": synthetic_build["max_seq_len"], "backbone": "dcnv2_ta",
                                       "embed_dim": 16},
             {"epochs": 3, "lr": 5e-3, "progress": False, "device": "cpu", "seed": 0})
    perturbed_copy(root / "trained", root / "random", scale=3.0)  # weights drowned in noise: random scores
    perturbed_copy(root / "trained", root / "twin", scale=0.01)  # as good as the trained model
    reg = ModelRegistry(str(root / "registry"))
    versions = {name: reg.register(root / name, MODEL) for name in ("random", "trained", "twin")}
    materialize(build, work_dir=root / "feast")
    state_dir = root / "deploy"
    # user-sticky: every plant() puts the router back, whatever design a test switched the deployment to
    deployer = LocalDeployer(state_dir / f"{MODEL}.json", name=MODEL, feast=FeastConfig(str(root / "feast")),
                             randomisation="user")
    n_events = len(pd.read_parquet(synthetic_build["events"], columns=["request_id"]))
    # ads clicked at the feed's rate (no ad offset): the click volume these tests' thresholds and
    # traffic sizes were set for; the world's default ad rates are the demo's (test_demo.py)
    world = dataclasses.replace(synthetic_build["world"], ad_logit_offset=0.0)
    return {"root": root, "reg": reg, "v": versions, "deployer": deployer, "state_dir": state_dir,
            "world": world, "n_events": n_events}


def uri(ctx: dict[str, Any], name: str) -> str:
    """Registry URI of one of the planted models (``random`` | ``trained`` | ``twin``)."""
    return ctx["reg"].get(MODEL, ctx["v"][name]).uri


def plant(ctx: dict[str, Any], champion: str, canary: str, percent: int) -> None:
    """Serve ``champion`` (also the registry's champion) with ``canary`` at ``percent`` %."""
    ctx["deployer"].deploy(uri(ctx, champion))
    ctx["reg"].set_champion(MODEL, ctx["v"][champion])
    ctx["deployer"].start_canary(uri(ctx, canary), percent)


def traffic(seed: int, n: int = 12_000, skew: float = 0.0) -> SimulationConfig:
    return SimulationConfig(n_requests=n, candidates_per_request=20, slots=3, instances_per_call=32,
                            concurrency=2, seed=seed, srm_skew=skew, progress=False)


__all__ = ["MODEL", "canary_world", "plant", "traffic", "uri"]
