"""The canary loop with planted models, end to end through a real local ModelServer:

simulated traffic (ground-truth clicks) -> A/B logs -> analysis -> decision -> deployer + registry.
A trained model replacing a random one is promoted; a random one replacing the trained champion
is rolled back; a broken split (users pushed to the canary on purpose) is flagged by SRM and
not promoted, however the arms compare.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from genctr.deploy.local import LocalDeployer
from genctr.errors import ConfigError
from genctr.monitoring.canary import run_canary_step
from genctr.monitoring.decision import CanaryPolicy
from genctr.registry import ModelRegistry
from genctr.simulation import SimulationConfig, simulate_deployment

pytestmark = pytest.mark.slow
POLICY = CanaryPolicy(min_users_per_arm=100, min_impressions_per_arm=2_000)


def traffic(seed: int, n: int = 12_000, skew: float = 0.0) -> SimulationConfig:
    return SimulationConfig(n_requests=n, candidates_per_request=20, slots=3, instances_per_call=32,
                            concurrency=2, seed=seed, srm_skew=skew, progress=False)


@pytest.fixture(scope="module")
def loop(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from genctr.features.feast_sync import materialize
    from genctr.serving.online import FeastConfig
    from genctr.training.run import finetune
    from serving_fixtures import perturbed_copy

    root = tmp_path_factory.mktemp("canary-loop")
    build = synthetic_build["build"]
    # test AUC ~0.74, gAUC ~0.72 on this world (the ground truth's is ~0.84)
    finetune(build, root / "trained", {"max_seq_len": synthetic_build["max_seq_len"], "backbone": "dcnv2_ta",
                                       "embed_dim": 16},
             {"epochs": 3, "lr": 5e-3, "progress": False, "device": "cpu", "seed": 0})
    perturbed_copy(root / "trained", root / "random", scale=3.0)  # weights drowned in noise: random scores
    perturbed_copy(root / "trained", root / "twin", scale=0.01)  # as good as the trained model
    reg = ModelRegistry(str(root / "registry"))
    versions = {name: reg.register(root / name, "ctr") for name in ("random", "trained", "twin")}
    materialize(build, work_dir=root / "feast")
    deployer = LocalDeployer(root / "deploy.json", feast=FeastConfig(str(root / "feast")))
    n_events = len(pd.read_parquet(synthetic_build["events"], columns=["request_id"]))
    yield {"root": root, "reg": reg, "v": versions, "deployer": deployer, "world": synthetic_build["world"],
           "n_events": n_events}
    deployer.shutdown()


def uri(ctx: dict[str, Any], name: str) -> str:
    return ctx["reg"].get("ctr", ctx["v"][name]).uri


def judge(ctx: dict[str, Any], tag: str, cfg: SimulationConfig) -> Any:
    logs = ctx["root"] / f"logs-{tag}"
    simulate_deployment(ctx["deployer"], ctx["world"], ctx["n_events"], cfg, logs)
    return run_canary_step(logs, ctx["deployer"], POLICY, ctx["root"] / f"out-{tag}", registry=ctx["reg"],
                           model_name="ctr", drift=tag == "better")


def test_no_canary_is_a_clear_error(loop: dict[str, Any]) -> None:
    loop["deployer"].deploy(uri(loop, "random"))
    with pytest.raises(ConfigError, match="no canary"):
        run_canary_step(loop["root"] / "none", loop["deployer"], POLICY, loop["root"] / "out-none")


def test_a_clearly_better_canary_is_promoted(loop: dict[str, Any]) -> None:
    reg, deployer = loop["reg"], loop["deployer"]
    deployer.deploy(uri(loop, "random"))
    reg.set_champion("ctr", loop["v"]["random"])
    deployer.start_canary(uri(loop, "trained"), 50)
    out = judge(loop, "better", traffic(seed=1))
    assert out.decision.action == "promote", out.decision.reasons
    assert out.acted == "promoted" and out.analysis.ctr.lo > 0
    status = deployer.status()
    assert status.champion_uri == uri(loop, "trained") and status.canary_uri is None
    assert reg.champion("ctr") == loop["v"]["trained"]  # the registry pointer moved with the traffic
    decision = json.loads(Path(out.paths["decision"]).read_text())
    assert decision["action"] == "promote" and decision["numbers"] and decision["reasons"]
    assert Path(out.paths["uplift_png"]).stat().st_size > 0 and Path(out.paths["drift_arms"]).is_file()


def test_a_random_canary_is_rolled_back(loop: dict[str, Any]) -> None:
    reg, deployer = loop["reg"], loop["deployer"]
    deployer.deploy(uri(loop, "trained"))
    reg.set_champion("ctr", loop["v"]["trained"])
    deployer.start_canary(uri(loop, "random"), 50)
    out = judge(loop, "worse", traffic(seed=2))
    assert out.decision.action == "rollback", out.decision.reasons
    assert out.analysis.ctr.hi < 0 and out.acted == "rolled back"
    status = deployer.status()
    assert status.champion_uri == uri(loop, "trained") and status.canary_uri is None
    assert reg.champion("ctr") == loop["v"]["trained"]


def test_a_skewed_split_is_flagged_by_srm_and_not_promoted(loop: dict[str, Any]) -> None:
    reg, deployer = loop["reg"], loop["deployer"]
    deployer.deploy(uri(loop, "random"))
    reg.set_champion("ctr", loop["v"]["random"])
    # a canary that would win on the numbers, but a third of the champion's users leak to it
    deployer.start_canary(uri(loop, "trained"), 30)
    out = judge(loop, "srm", traffic(seed=3, skew=0.35))
    assert out.analysis.srm.p_value < POLICY.srm_alpha
    assert out.decision.action != "promote" and any("sample ratio" in r for r in out.decision.reasons)
    assert reg.champion("ctr") == loop["v"]["random"]
    assert deployer.status().champion_uri == uri(loop, "random")
