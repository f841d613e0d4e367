"""``make demo``: the whole product on one machine, end to end.

1. **Offline quality** — the training pipeline (kfp.local) on the bundled MovieLens data:
   GX checks, Spark features, Feast, GenCTR pretraining, fine-tuning with parameter sharing
   into DCN-V2 + target attention, the gate. Registered,
   not deployed: MovieLens has no click model to run a canary against.
2. **The champion** — the training pipeline on the synthetic world, trained on an early
   slice of its events ("yesterday's model": no pretraining, a DNN); the deploy step serves
   it as the first champion on a local KServe ModelServer.
3. **The candidate** — the pipeline again on the full event stream with GenCTR pretraining
   shared into DCN-V2 + target attention; the gate compares it with the champion on the same test
   rows, and the deploy step starts it as a canary.
4. **The canary** — the path a cluster takes: an A/B log sink starts (a subprocess), the model
   server's payload logger (KServe's agent on a cluster) is pointed at it, and simulated ad
   traffic from the same world, its ads clicked at ad rates, goes through the user-hash router
   to both arms over HTTP (or, with ``randomisation="request"``, split per request as Knative's
   ``canaryTrafficPercent`` splits it); the simulator reports its clicks (ground truth, GSP
   auction) to the sink. The canary loop then
   reads the tables the sink wrote (clicks attributed by the Spark join), analyses them
   (sequential CIs, SRM, Evidently drift), decides, and promotes or rolls back through the
   deployer and registry.
5. One HTML report with the ROC curves, training curves, A/B uplift over time and the decision.

Everything lives under ``$GENCTR_HOME/demo`` (``./.genctr/demo`` by default), the deployment's
state under ``$GENCTR_HOME/deploy``; the local model server is stopped at the end unless
``keep_serving``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.paths import home

if TYPE_CHECKING:
    from genctr.deploy.local import LocalDeployer

log = logging.getLogger(__name__)

DEPLOYMENT = "genctr-demo"
SYNTHETIC_MODEL = "synthetic-ctr"
MOVIELENS_MODEL = "movielens-ctr"


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults fit in about ten minutes on a 2-core laptop."""

    movielens_seq_len: int = 50
    world_users: int = 2_000
    world_items: int = 3_000
    champion_events: int = 30_000  # the champion's training data: the world's first rounds
    candidate_events: int = 100_000  # the candidate's: the full stream so far
    seq_len: int = 30
    # GenCTR pretraining's step budget in both GenCTR runs (the pipeline's default; early stopping on
    # the held-out next-item loss may end it sooner), at the pipeline's default batch of 64 windows
    pretrain_max_steps: int = 600
    canary_percent: int = 50
    requests: int = 40_000  # simulated ad requests during the canary
    # "user": user-sticky, through the user-hash router in front of the arms (the analysis unit is
    # the user); "request": each ad request draws its arm, as Knative's canaryTrafficPercent splits
    randomisation: str = "user"
    # The simulator scores 32 users per HTTP call, so a call's p99 is far above a one-user
    # request's; the latency guardrail is set for that (the policy default suits real traffic).
    max_p99_latency_ms: float = 1_000.0
    seed: int = 0
    # Spark master of the pipelines' feature builds: local[2] (a JVM in each build step), or a running
    # cluster or Spark Connect server on this machine (spark://, sc://). The canary's click
    # attribution runs in the demo's own process, on local Spark: pyspark keeps a process that has
    # opened a Connect session on Connect for good.
    spark_master: str = "local[2]"
    skip_movielens: bool = False
    keep_serving: bool = False


@dataclass
class DemoResult:
    root: Path
    report: Path
    seconds: dict[str, float] = field(default_factory=dict)
    movielens: dict[str, Any] | None = None  # gate decision of the offline run
    champion: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    canary: dict[str, Any] = field(default_factory=dict)  # the loop's turn: decision.json's fields + result
    artifacts: dict[str, str] = field(default_factory=dict)  # paths the report draws on

    def summary_lines(self) -> list[str]:
        total = sum(self.seconds.values())
        lines = [f"demo finished in {total:.0f}s ({', '.join(f'{k} {v:.0f}s' for k, v in self.seconds.items())})"]
        if self.movielens:
            c = self.movielens["candidate"]
            lines.append(f"MovieLens offline: AUC {c['auc']:.4f}  LogLoss {c['logloss']:.4f}  gAUC {c['gauc']:.4f}"
                         f"  gate {'PASSED' if self.movielens['passed'] else 'REJECTED'}")
        gate = self.candidate.get("gate") or {}
        if gate:
            lines.append(f"candidate gate: {'PASSED' if gate.get('passed') else 'REJECTED'} - {gate.get('reason')}")
        if self.canary:
            lines.append(f"canary decision: {self.canary['action'].upper()} ({self.canary['acted']})")
            lines += [f"  - {r}" for r in self.canary["reasons"]]
        lines.append(f"report: {self.report}")
        return lines


class _Stages:
    """The demo's progress: one line per stage, ``[n/total] what``."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.n, self.total, self.say = 0, total, say

    def __call__(self, what: str) -> None:
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {what}")


def _pipeline(params: dict[str, Any], root: Path, stage: _Stages | None = None, what: str = "pipeline") -> Any:
    from genctr.orchestration.local import run_local

    log_file = root / "logs" / f"{what.split()[0]}-pipeline.log"  # movielens | champion | candidate
    if stage is not None:
        stage(f"{what}; step logs: {log_file}")
    return run_local(params, root / "pipeline-runs", log_file=log_file)


def _model_dir(run: Any) -> Path:
    return run.artifact_path("finetune", "model")


def run_demo(cfg: DemoConfig | None = None, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the five stages above; returns what the report shows. ``progress`` gets one line per
    stage (default: the log); kfp.local's output goes to ``$GENCTR_HOME/demo/logs/``."""
    from genctr.data.sources.synthetic import SyntheticConfig
    from genctr.deploy.factory import DeployTarget, make_deployer
    from genctr.features.spark_session import check_master, is_local
    from genctr.monitoring.canary import run_canary_step
    from genctr.monitoring.decision import CanaryPolicy
    from genctr.registry import ModelRegistry
    from genctr.simulation import SimulationConfig, simulate_deployment

    cfg = cfg or DemoConfig()
    check_master(cfg.spark_master)  # a bad master fails here, not minutes later in the first build step
    stage = _Stages(5 if cfg.skip_movielens else 6, progress or log.info)
    root = home() / "demo"
    _stop_old_server()
    if root.exists():
        shutil.rmtree(root)  # a demo starts from nothing: no champion, no deployment
    root.mkdir(parents=True)
    registry = root / "registry"
    # the deploy step's default state dir ($GENCTR_HOME/deploy); the demo's own design for the canary
    target = DeployTarget(kind="local", name=DEPLOYMENT, randomisation=cfg.randomisation)
    result = DemoResult(root=root, report=root / "report.html")
    common = {"registry_root": str(registry), "spark_master": cfg.spark_master, "device": "cpu", "seed": cfg.seed,
              "batch_size": 512}
    if not is_local(cfg.spark_master):  # Spark off this process, on this machine: it shares the demo's disk
        common["spark_build_uri"] = str(root / "spark-builds")

    if not cfg.skip_movielens:
        t0 = time.perf_counter()
        run = _pipeline({**common, "data_source": "movielens", "max_seq_len": cfg.movielens_seq_len,
                         "pretrain_method": "genctr", "backbone": "dcnv2_ta", "transfer": "share",
                         "pretrain_max_steps": cfg.pretrain_max_steps, "finetune_epochs": 2, "finetune_lr": 2e-3,
                         "model_name": MOVIELENS_MODEL, "promote_without_canary": True, "deploy_target": "none"},
                        root, stage, "movielens pipeline (offline quality, GenCTR into DCN-V2 + TA)")
        result.seconds["movielens pipeline"] = time.perf_counter() - t0
        result.movielens = run.decision
        result.artifacts["movielens_model"] = str(_model_dir(run))
        result.artifacts["movielens_gate_report"] = str(run.gate_report)

    world = {"data_source": "synthetic", "synthetic_users": cfg.world_users, "synthetic_items": cfg.world_items,
             "max_seq_len": cfg.seq_len, "model_name": SYNTHETIC_MODEL, "deploy_target": "local",
             "deployment": DEPLOYMENT, "canary_percent": cfg.canary_percent, "finetune_lr": 5e-3}
    t0 = time.perf_counter()
    # yesterday's model is deliberately weak: its floor only asks for better than chance
    run = _pipeline({**common, **world, "synthetic_events": cfg.champion_events, "pretrain_method": "none",
                     "backbone": "dnn", "transfer": "none", "finetune_epochs": 2, "floor_auc": 0.51}, root,
                    stage, f"champion pipeline (synthetic world, first {cfg.champion_events:,} events, DNN)")
    result.seconds["champion pipeline"] = time.perf_counter() - t0
    result.champion = {"gate": run.decision, "deployment": run.deployment}
    if run.deployment is None:
        log.warning("the first synthetic model was not deployed (gate: %s): the candidate will be the "
                    "first champion and no canary will run", (run.decision or {}).get("reason"))

    t0 = time.perf_counter()
    run = _pipeline({**common, **world, "synthetic_events": cfg.candidate_events, "pretrain_method": "genctr",
                     "backbone": "dcnv2_ta", "transfer": "share", "pretrain_max_steps": cfg.pretrain_max_steps,
                     "finetune_epochs": 2}, root,
                    stage, f"candidate pipeline ({cfg.candidate_events:,} events, GenCTR pretraining, gate, canary)")
    result.seconds["candidate pipeline"] = time.perf_counter() - t0
    result.candidate = {"gate": run.decision, "deployment": run.deployment}
    result.artifacts["candidate_model"] = str(_model_dir(run))
    result.artifacts["candidate_gate_report"] = str(run.gate_report)

    deployer = _local(make_deployer(target))
    try:
        if run.deployment is None or run.deployment.get("action") != "start_canary":
            log.warning("the candidate did not reach the canary (gate: %s); no traffic to simulate",
                        (run.decision or {}).get("reason"))
            stage("canary traffic: skipped (no canary)")
            stage("canary analysis: skipped (no canary)")
        else:
            stage(f"canary traffic ({cfg.requests:,} simulated requests, {cfg.randomisation}-randomised; the "
                  "server's payload logger and the clicks go to the A/B log sink)")
            t0 = time.perf_counter()
            world_cfg = SyntheticConfig(n_users=cfg.world_users, n_items=cfg.world_items, seed=cfg.seed)
            logs = root / "ab-logs"  # written by the sink that simulate_deployment starts for the run
            sim = simulate_deployment(deployer, world_cfg, cfg.candidate_events,
                                      SimulationConfig(n_requests=cfg.requests, seed=cfg.seed, progress=True),
                                      logs, root / "simulation.json")
            result.seconds["canary traffic"] = time.perf_counter() - t0
            stage("canary analysis and decision (delta-method uplift, SRM, drift)")
            t0 = time.perf_counter()
            policy = CanaryPolicy(max_p99_latency_ms=cfg.max_p99_latency_ms)
            turn = run_canary_step(logs, deployer, policy, root / "canary", registry=ModelRegistry(str(registry)),
                                   model_name=SYNTHETIC_MODEL, target=target.kind)
            result.seconds["canary analysis"] = time.perf_counter() - t0
            # the report reads the decision's fields, what was done and the files' paths
            result.canary = {**turn.to_dict(), "acted": turn.result.acted, "paths": turn.paths,
                             "simulation": sim.to_dict()}
        stage(f"report ({result.report})")
        t0 = time.perf_counter()
        from genctr.demo_report import write_demo_report

        write_demo_report(result)
        result.seconds["report"] = time.perf_counter() - t0
        (root / "demo.json").write_text(json.dumps(_jsonable(result), indent=2, default=str))
    finally:
        if not cfg.keep_serving and target.state_file().exists():
            deployer.shutdown()
    return result


def _local(deployer: Any) -> LocalDeployer:
    """The demo's deployment is a local one: only that kind has a server process to shut down."""
    from genctr.deploy.local import LocalDeployer

    if not isinstance(deployer, LocalDeployer):
        raise TypeError(f"the demo deploys locally, got {type(deployer).__name__}")
    return deployer


def _stop_old_server() -> None:
    """A previous demo's deployment (kept serving) must not hold the port or the old models."""
    from genctr.deploy.factory import DeployTarget, make_deployer

    target = DeployTarget(kind="local", name=DEPLOYMENT)
    if target.state_file().exists():
        _local(make_deployer(target)).shutdown()
        target.state_file().unlink()


def _jsonable(result: DemoResult) -> dict[str, Any]:
    return {"root": str(result.root), "report": str(result.report), "seconds": result.seconds,
            "movielens": result.movielens, "champion": result.champion, "candidate": result.candidate,
            "canary": result.canary, "artifacts": result.artifacts}
