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

import pytest
from canary_fixtures import canary_world, traffic, uri

from genctr.errors import ConfigError
from genctr.monitoring.canary import run_canary_step
from genctr.monitoring.decision import CanaryPolicy
from genctr.simulation import SimulationConfig, simulate_deployment

pytestmark = pytest.mark.slow
# the simulator scores 32 users per HTTP call: a call's latency on a loaded 2-core box is no
# guide to a one-user request's, so the latency guardrail is out of these tests' way
POLICY = CanaryPolicy(min_users_per_arm=100, min_impressions_per_arm=2_000, max_p99_latency_ms=10_000)


@pytest.fixture(scope="module")
def loop(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
         pytestconfig: pytest.Config) -> dict[str, Any]:
    return canary_world(synthetic_build, tmp_path_factory, pytestconfig)


def judge(ctx: dict[str, Any], tag: str, cfg: SimulationConfig) -> Any:
    logs = ctx["root"] / f"logs-{tag}"
    simulate_deployment(ctx["deployer"], ctx["world"], ctx["n_events"], cfg, logs)
    return run_canary_step(logs, ctx["deployer"], POLICY, ctx["root"] / f"out-{tag}", registry=ctx["reg"],
                           model_name="ctr", drift=tag == "better")


def test_no_canary_is_a_continue_with_its_reason(loop: dict[str, Any]) -> None:
    # the same verdict as the pipeline's analyse step: an hourly run with nothing to judge is no failure
    loop["deployer"].deploy(uri(loop, "random"))
    (loop["root"] / "none").mkdir(exist_ok=True)
    out = run_canary_step(loop["root"] / "none", loop["deployer"], POLICY, loop["root"] / "out-none",
                          registry=loop["reg"], model_name="ctr")
    assert out.decision.action == "continue" and out.result.acted == "none"
    assert out.decision.reasons == ["deployment ctr has no canary in progress: nothing to judge"]
    assert out.decision.canary_uri is None and out.decision.analysis is None
    assert loop["deployer"].status().champion_uri == uri(loop, "random")
    saved = json.loads(Path(out.paths["decision"]).read_text())
    assert saved == out.decision.to_dict() and "no canary in progress" in Path(out.paths["report"]).read_text()
    with pytest.raises(ConfigError, match="does not exist"):  # a missing log directory is still an error
        run_canary_step(loop["root"] / "nowhere", loop["deployer"], POLICY, loop["root"] / "out-none")


def test_a_clearly_better_canary_is_promoted(loop: dict[str, Any]) -> None:
    reg, deployer = loop["reg"], loop["deployer"]
    deployer.deploy(uri(loop, "random"))
    reg.set_champion("ctr", loop["v"]["random"])
    deployer.start_canary(uri(loop, "trained"), 50)
    out = judge(loop, "better", traffic(seed=1))
    assert out.decision.action == "promote", out.decision.reasons
    assert out.result.acted == "promoted" and out.decision.analysis["ctr"]["lo"] > 0
    status = deployer.status()
    assert status.champion_uri == uri(loop, "trained") and status.canary_uri is None
    assert reg.champion("ctr") == loop["v"]["trained"]  # the registry pointer moved with the traffic
    decision = json.loads(Path(out.paths["decision"]).read_text())
    assert decision["action"] == "promote" and decision["numbers"] and decision["reasons"]
    assert decision == out.decision.to_dict()  # decision.json is the CanaryDecision, nothing else
    history = [json.loads(line) for line in Path(out.paths["history"]).read_text().splitlines()]
    assert history[-1] == {**decision, "result": out.result.to_dict()}
    assert history[-1]["result"]["canary_version"] == loop["v"]["trained"]
    assert Path(out.paths["uplift_png"]).stat().st_size > 0 and Path(out.paths["drift_arms"]).is_file()


def test_a_random_canary_is_rolled_back(loop: dict[str, Any]) -> None:
    reg, deployer = loop["reg"], loop["deployer"]
    deployer.deploy(uri(loop, "trained"))
    reg.set_champion("ctr", loop["v"]["trained"])
    deployer.start_canary(uri(loop, "random"), 50)
    out = judge(loop, "worse", traffic(seed=2))
    assert out.decision.action == "rollback", out.decision.reasons
    assert out.decision.analysis["ctr"]["hi"] < 0 and out.result.acted == "rolled back"
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
    assert out.decision.analysis["srm"]["p_value"] < POLICY.srm_alpha
    assert out.decision.action != "promote" and any("sample ratio" in r for r in out.decision.reasons)
    assert reg.champion("ctr") == loop["v"]["random"]
    assert deployer.status().champion_uri == uri(loop, "random")
