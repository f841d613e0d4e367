"""The canary pipeline: collect A/B logs -> analyse and decide -> (unless "continue") act.

One turn of the canary loop, run on a schedule (``manifests/recurring-run-canary.yaml``,
hourly) while a canary started by the training pipeline's deploy step is live::

    python -m pipelines.canary_pipeline --out canary_pipeline.yaml

Caching is off for every step: the logs behind an unchanged ``log_dir`` grow, and the
deployment's split changes between runs. The analysis returns its action as its single
``Output`` parameter (kfp.local resolves a ``dsl.If`` only on that, see training_pipeline.py).
The decision policy is one ``policy`` parameter (a dict of genctr CanaryPolicy fields, its
defaults CanaryPolicy's), validated by CanaryPolicy in the collect and analyse steps. With no
canary in progress the analysis decides ``continue`` and the act step is skipped. The act step
refuses to touch a canary other than the one analysed; ``dry_run`` keeps it to a log line.
The A/B logs and the registry derive from one ``storage_root`` (``genctr.storage``), resolved by
the first step; the run form's defaults come from a compile profile (``genctr.orchestration.profiles``).
"""

import dataclasses
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from components import act_on_canary, analyze_canary, collect_logs, resolve_storage
from genctr.monitoring.decision import CanaryPolicy
from genctr.orchestration.profiles import Profile, get_profile
from pipelines.placement import STORAGE_SECRET_KEYS, PlatformConfig, compile_main, compile_placed

PIPELINE_NAME = "genctr-canary"


def build_pipeline(platform: PlatformConfig | None = None, profile: str | Profile = "local") -> Any:
    """The canary pipeline (a KFP GraphComponent) placed according to ``platform``, its run form's
    defaults from ``profile`` (``local`` | ``cluster``)."""
    platform = platform or PlatformConfig()
    prof = get_profile(profile)
    default_policy = dataclasses.asdict(CanaryPolicy())  # the run form's default: the library's, declared once

    def on_cpu(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
        return task.set_display_name(name).set_container_image(platform.image)

    def live(task: dsl.PipelineTask) -> dsl.PipelineTask:
        """Never cached (reads live logs and deployment state); object-store credentials if configured."""
        task.set_caching_options(enable_caching=False)
        if platform.storage_secret:
            kubernetes.use_secret_as_env(task, secret_name=platform.storage_secret,
                                         secret_key_to_env={k: k for k in STORAGE_SECRET_KEYS}, optional=True)
        return task

    def canary_pipeline(
        storage_root: str = "",
        log_dir: str = "",
        since_ts: int = 0,
        deploy_target: str = "local",
        deployment: str = "genctr-ctr",
        deploy_state_dir: str = "",
        kserve_namespace: str = "genctr",
        kserve_env: str = "prod",
        randomisation: str = "",
        registry_root: str = "",
        model_name: str = "genctr-ctr",
        policy: dict = default_policy,
        drift: bool = True,
        dry_run: bool = False,
        spark_master: str = "local[*]",
    ) -> None:
        """Judge the running canary on its A/B logs and promote it, roll it back, or keep it running.

        Args:
            storage_root: Root of everything runs share (s3://bucket/prefix, gs://..., or a local path):
                <root>/ab-logs/<deployment>, <root>/registry. '' = $GENCTR_STORAGE_ROOT of the step's
                pod, else (local profile only) $GENCTR_HOME.
            log_dir: A/B log directory with requests/, impressions/, clicks/ (local path or
                s3://, gs:// URI), overriding <storage_root>/ab-logs/<deployment> ('' = derived).
            since_ts: Epoch seconds the canary started; earlier traffic is ignored (0 = all).
            deploy_target: Where the deployment runs: local (ModelServer on this machine) |
                kserve (InferenceService, Knative mode).
            deployment: Deployment / InferenceService name.
            deploy_state_dir: local target: directory of the deployment's state file
                ('' = $GENCTR_HOME/deploy).
            kserve_namespace: Namespace of the InferenceService (deploy_target kserve).
            kserve_env: Manifest defaults for kserve: dev | prod.
            randomisation: The A/B design: user (the user-hash router) | request (Knative's
                per-request split) | '' (local: as recorded, user when new; kserve: request).
            registry_root: Model registry, overriding <storage_root>/registry ('' = derived); a
                promotion moves its champion pointer to the canary's version.
            model_name: Registered model name.
            policy: The decision policy (genctr CanaryPolicy; fields left out take its defaults):
                alpha (two-sided level of the uplift CIs), min_users_per_arm and
                min_impressions_per_arm (before a statistical decision), ctr_uplift_threshold
                (promote when the CTR uplift's lower bound exceeds it; relative, 0.01 = +1 %),
                rpm_must_not_be_worse (roll back, never promote, when RPM is significantly worse),
                srm_alpha (sample-ratio-mismatch p-value below which the split is broken: roll
                back), max_error_rate and max_p99_latency_ms (canary guardrails), duplicates
                (refuse | dedupe: a duplicated log row fails the run, or is dropped and counted),
                method (sequential: always-valid intervals, any number of looks | fixed_horizon: one
                planned look), sequential_tuning_n (units at which the sequential interval is
                narrowest), cuped (adjust by the pre-period), analysis_unit (auto | user | request).
            drift: Add an Evidently drift report (canary vs champion impressions) to the analysis.
            dry_run: Decide and report, but neither promote nor roll back.
            spark_master: Spark master of the collect step's click attribution: local[*] (Spark in
                the step's pod), or a cluster / Spark Connect server (spark://, sc://) whose
                executors share the step's disk.
        """
        storage = live(on_cpu(resolve_storage(
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, storage_root=storage_root, required=prof.storage_required,
            deployment=deployment, registry_root=registry_root, log_dir=log_dir), "Resolve storage"))
        collect = live(on_cpu(collect_logs(log_dir=storage.outputs["ab_logs"], since_ts=since_ts,
                                           deployment=deployment, policy=policy, spark_master=spark_master),
                              "Collect A/B logs"))
        analysis = live(on_cpu(analyze_canary(
            logs=collect.outputs["logs"], target=deploy_target, deployment=deployment, namespace=kserve_namespace,
            kserve_env=kserve_env, state_dir=deploy_state_dir, policy=policy, drift=drift,
            randomisation=randomisation), "Analyse canary"))
        with dsl.If(analysis.outputs["Output"] != "continue", name="canary-decided"):
            live(on_cpu(act_on_canary(
                analysis=analysis.outputs["analysis"], registry_root=storage.outputs["registry"], model_name=model_name,
                target=deploy_target, deployment=deployment, namespace=kserve_namespace, kserve_env=kserve_env,
                state_dir=deploy_state_dir, dry_run=dry_run, randomisation=randomisation), "Promote or roll back"))

    return dsl.pipeline(name=PIPELINE_NAME, description="GenCTR canary loop: collect A/B logs, analyse "
                        "(delta-method uplift, SRM, guardrails, drift), then promote or roll back the canary.")(
        prof.apply(canary_pipeline, "canary"))


canary_pipeline = build_pipeline()  # default placement; kfp.local runs this one


def compile_pipeline(out: str | Path, platform: PlatformConfig | None = None,
                     profile: str | Profile = "local") -> Path:
    """Compile the pipeline (placed by ``platform``, default: from the environment; run-form defaults
    from ``profile``) to YAML."""
    prof = get_profile(profile)
    return compile_placed(lambda p: build_pipeline(p, prof), out, platform)


def main(argv: list[str] | None = None) -> int:
    return compile_main(build_pipeline, "canary_pipeline.yaml", "Compile the genctr canary pipeline to YAML "
                        "(placement from GENCTR_IMAGE and GENCTR_STORAGE_SECRET).", argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
