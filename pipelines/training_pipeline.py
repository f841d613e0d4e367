"""The training pipeline: events -> GX -> Spark features -> GX -> Feast -> pretrain -> fine-tune
-> champion gate -> (if passed) register.

Pure composition of ``components``. Parameters are typed with defaults: they are the Kubeflow
UI's run form. Placement (images, GPUs, node selectors, tolerations, secrets) is fixed at
compile time by a :class:`~pipelines.placement.PlatformConfig`::

    python -m pipelines.training_pipeline --out training_pipeline.yaml

Caching: on for the deterministic data and training steps; off for the gate and register,
which read the registry's current champion. A run on new data behind an unchanged URI
must be submitted with caching off (``genctr pipeline schedule`` does that by default).

Shared state lives under one storage root (``storage_root``, ``genctr.storage``): the first step
resolves it and derives the registry, the Feast registry and the run's build location, so every
later pod uses the same ones. The run form's defaults come from a compile profile
(``genctr.orchestration.profiles``: ``local`` for a laptop, ``cluster`` for Kubeflow, where the
storage root is required).

Training runs in the step's pod (``train_workers=1``) or, with ``train_workers > 1``, as a
Kubeflow Trainer ``TrainJob`` (``trainer_api="trainjob"``) or Training Operator ``PyTorchJob``
(``"pytorchjob"``) of that many nodes with ``train_gpus_per_worker`` GPUs each, which the step
submits and waits for (``genctr.orchestration.training_step``). The job's pods get the same image,
requests, GPU node selector, tolerations and storage Secret as the training steps
(:func:`job_placement`); the step's ServiceAccount needs the job and pod-log verbs of
``manifests/rbac-pipeline-runner.yaml``.

``pretrain_method="none"`` is handled inside the pretrain component (it writes a marker and
fine-tuning starts from scratch), which keeps one linear DAG that kfp.local runs as well.
The gate returns its decision as its single ``Output`` parameter: kfp.local resolves a
``dsl.If`` on ``task.outputs["Output"]`` but silently treats a named output as false.
"""

from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from components import (
    build_features,
    deploy_model,
    evaluate_and_gate,
    finetune,
    ingest_events,
    materialize_features,
    pretrain,
    register_model,
    resolve_storage,
    validate_events,
    validate_samples,
)
from genctr.orchestration.profiles import Profile, get_profile
from pipelines.placement import STORAGE_SECRET_KEYS, PlatformConfig, compile_main, compile_placed

PIPELINE_NAME = "genctr-training"


def job_placement(platform: PlatformConfig) -> dict[str, Any]:
    """Placement of a training job's pods (``genctr.orchestration.trainer_job.JobPlacement``): the
    training steps' own, so a job lands where the step would have trained."""
    return {"image": platform.train_image, "cpu": platform.train_cpu, "memory": platform.train_memory,
            "accelerator": platform.accelerator_type, "node_selector": dict(platform.gpu_node_selector),
            "tolerations": [{"key": t.key, "operator": t.operator, "effect": t.effect,
                             **({"value": t.value} if t.value else {})} for t in platform.gpu_tolerations],
            "storage_secret": platform.storage_secret}


def build_pipeline(platform: PlatformConfig | None = None, profile: str | Profile = "local") -> Any:
    """The training pipeline (a KFP GraphComponent) placed according to ``platform``, its run form's
    defaults from ``profile`` (``local`` | ``cluster``)."""
    platform = platform or PlatformConfig()
    prof = get_profile(profile)

    def on_cpu(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
        return task.set_display_name(name).set_container_image(platform.image)

    def on_gpu(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
        task.set_display_name(name).set_container_image(platform.train_image)
        task.set_cpu_request(platform.train_cpu).set_memory_request(platform.train_memory)
        if platform.gpus:
            task.set_accelerator_type(platform.accelerator_type).set_accelerator_limit(platform.gpus)
        for label, value in platform.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for t in platform.gpu_tolerations:
            kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value or None, effect=t.effect)
        return task

    def with_storage(task: dsl.PipelineTask) -> dsl.PipelineTask:
        """Object-store credentials for steps that read or write URIs themselves (data, registry, the
        training steps staging a training job's inputs and model)."""
        if platform.storage_secret:
            kubernetes.use_secret_as_env(task, secret_name=platform.storage_secret,
                                         secret_key_to_env={k: k for k in STORAGE_SECRET_KEYS}, optional=True)
        return task

    def reads_registry(task: dsl.PipelineTask) -> dsl.PipelineTask:
        return with_storage(task.set_caching_options(enable_caching=False))  # the champion changes between runs

    def training_pipeline(
        data_source: str = "movielens",
        data_path: str = "",
        movielens_category: str = "combo",
        synthetic_events: int = 200_000,
        synthetic_users: int = 2_000,
        synthetic_items: int = 5_000,
        behaviour_log: bool = False,
        max_seq_len: int = 200,
        spark_master: str = "local[*]",
        spark_submit: str = "local",
        spark_build_uri: str = "",
        online_store: str = "sqlite",
        redis_url: str = "localhost:6379",
        pretrain_method: str = "genctr",
        negatives: str = "cs",
        pretrain_epochs: int = 1,
        pretrain_max_steps: int = 600,
        pretrain_patience: int = 10,
        pretrain_batch_size: int = 0,
        pretrain_lr: float = 1e-3,
        dgenctr_pretrain_samples: str = "impressions",
        backbone: str = "dnn",
        transfer: str = "share",
        finetune_epochs: int = 10,
        finetune_patience: int = 2,
        label_fraction: float = 1.0,
        integration_scale: str = "none",
        decoder_lr_mult: float = 1.0,
        finetune_lr: float = 1e-3,
        batch_size: int = 1024,
        seed: int = 0,
        device: str = "auto",
        train_workers: int = 1,
        train_gpus_per_worker: int = 0,
        trainer_api: str = "trainjob",
        auc_margin: float = 0.001,
        alpha: float = 0.05,
        floor_auc: float = 0.55,
        storage_root: str = "",
        registry_root: str = "",
        model_name: str = "genctr-ctr",
        canary_percent: int = 10,
        promote_without_canary: bool = False,
        deploy_target: str = "local",
        deployment: str = "genctr-ctr",
        kserve_namespace: str = "genctr",
        kserve_env: str = "prod",
        randomisation: str = "",
    ) -> None:
        """Train a generative-pretrained CTR model and register it if it beats the champion.

        Args:
            data_source: movielens | taobao | synthetic | events (canonical Parquet/CSV).
            data_path: Source file or directory ('' = bundled MovieLens).
            movielens_category: MovieLens category mapping: combo | first.
            synthetic_events: Synthetic source: number of impressions.
            synthetic_users: Synthetic source: number of users.
            synthetic_items: Synthetic source: number of items.
            behaviour_log: Also ingest the source's behaviour log (movielens: every rating; taobao:
                cart/fav/buy; events: <stem>.behaviours.parquet beside data_path) as behaviours.
            max_seq_len: L, behaviours per sequence.
            spark_master: Spark master URL for the feature build.
            spark_submit: Where the feature build runs: local (Spark as spark_master says, driven
                from the step's pod) | operator (a SparkApplication for the Kubeflow Spark Operator);
                off the pod the build is staged under the storage root.
            spark_build_uri: Where Spark off the pod (a cluster, Spark Connect, the Operator's pods)
                reads the events and writes the build: an object-store URI, or a path every node
                mounts ('' = under the object-store storage root). Unused for a local master.
            online_store: Feast online store: sqlite | redis.
            redis_url: Redis connection string (online_store=redis).
            pretrain_method: genctr | dgenctr | none.
            negatives: GenCTR sampled-softmax negatives: cs (same category) | rs (random).
            pretrain_epochs: Pretraining passes (used only when pretrain_max_steps is 0).
            pretrain_max_steps: Pretraining budget in optimizer steps (0 = pretrain_epochs passes).
            pretrain_patience: Stop pretraining once this many passes bring no better held-out loss,
                keeping the best pass's weights (0 = the whole budget). Generous on purpose: on
                small data a pass is a few dozen steps, and the loss can plateau for several
                passes before it falls.
            pretrain_batch_size: Pretraining batch (0 = the method's: 64 windows for genctr,
                512 samples for dgenctr).
            pretrain_lr: Pretraining learning rate.
            dgenctr_pretrain_samples: dgenctr's pretraining corpus: impressions (every training
                impression, labels of the labelled share) | behaviours (the labelled impressions plus
                every training behaviour as an unlabelled sample) | both.
            backbone: dnn | dcnv2 | dcnv2_ta (genctr or none; dgenctr fine-tunes its own network).
            transfer: Use of the pretrained model. genctr: share | integrate;
                dgenctr: full | embedding_only | scorer_only; pretrain_method none: none.
            finetune_epochs: Fine-tuning budget in passes over the labelled impressions.
            finetune_patience: Stop fine-tuning once this many passes bring no better valid
                LogLoss, keeping the best pass's weights (0 = train every pass, keep the last).
            label_fraction: Share of the training impressions whose labels fine-tuning uses,
                in (0, 1] (seeded by seed; pretraining still sees all training behaviour, and
                dgenctr's pretraining only these labels).
            integration_scale: transfer=integrate: none (the decoder feature as it is) | match (at
                the scale of the embeddings beside it; with few labels, use match).
            decoder_lr_mult: transfer=integrate: learning-rate factor of the integrated decoder, its
                tables included (0 = frozen; with few labels a trained decoder overfits).
            finetune_lr: Fine-tuning learning rate.
            batch_size: Fine-tuning batch size.
            seed: Random seed (synthetic data and training).
            device: auto | cpu | cuda.
            train_workers: Training nodes: 1 = train in the step's pod; N > 1 = each training step
                submits a Kubeflow training job with N nodes and waits (storage_root must be an object store).
            train_gpus_per_worker: GPUs per job node (0 = CPU nodes); used when train_workers > 1.
            trainer_api: Training job kind: trainjob (Kubeflow Trainer v2) | pytorchjob (Training Operator v1).
            auc_margin: Gate: the candidate's AUC must beat the champion's by more than this.
            alpha: Gate: significance level of DeLong's one-sided test.
            floor_auc: Gate: minimum AUC of a first model (no champion yet).
            storage_root: Root of everything runs share (s3://bucket/prefix, gs://..., or a local path):
                <root>/registry, <root>/feast/<online_store>/registry.db, <root>/builds/<run id>.
                '' = $GENCTR_STORAGE_ROOT of the step's pod, else (local profile only) $GENCTR_HOME.
            registry_root: Model registry, overriding <storage_root>/registry ('' = derived).
            model_name: Registered model name.
            canary_percent: Traffic share a new canary starts with (1..99); the canary loop decides.
            promote_without_canary: Make a passing model the registry's champion at once, skipping
                the canary (for offline-only use; the deploy step then only serves the first model).
            deploy_target: Where to serve: local (ModelServer on this machine) | kserve
                (InferenceService, Knative mode) | none (register only).
            deployment: Deployment / InferenceService name.
            kserve_namespace: Namespace of the InferenceService (deploy_target kserve).
            kserve_env: Manifest defaults for kserve: dev | prod.
            randomisation: The A/B design: user (the user-hash router) | request (Knative's
                per-request split) | '' (local: as recorded, user when new; kserve: request).
        """
        storage = with_storage(on_cpu(resolve_storage(
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, storage_root=storage_root, required=prof.storage_required,
            online_store=online_store, deployment=deployment, registry_root=registry_root), "Resolve storage"))
        storage.set_caching_options(enable_caching=False)  # reads the environment; names this run's locations
        where = storage.outputs
        ingest = with_storage(on_cpu(ingest_events(source=data_source, path=data_path, category=movielens_category,
                                      synthetic_events=synthetic_events, synthetic_users=synthetic_users,
                                      synthetic_items=synthetic_items, seed=seed, behaviour_log=behaviour_log),
                                      "Ingest events")).after(storage)
        events = ingest.outputs["events"]
        checked_events = on_cpu(validate_events(events=events), "Validate events (GX)")
        # with the storage Secret: off the pod (a cluster, Connect, the operator) Spark stages the
        # build under the storage root, named by the events (not by the run: the step's inputs
        # stay the same from run to run, so KFP's cache still finds it)
        features = with_storage(on_cpu(build_features(
            events=events, behaviours=ingest.outputs["behaviours"], max_seq_len=max_seq_len,
            spark_master=spark_master, spark_submit=spark_submit, spark_build_uri=spark_build_uri),
            "Build features (Spark)")).after(checked_events)
        features.set_cpu_request(platform.spark_cpu).set_memory_request(platform.spark_memory)
        build = features.outputs["build"]
        checked_samples = on_cpu(validate_samples(build=build), "Validate samples (GX)")
        feast = with_storage(on_cpu(materialize_features(
            build=build, online_store=online_store, redis_url=redis_url, feast_registry=where["feast_registry"],
            publish_to=where["build"]), "Materialise to Feast")).after(checked_samples)
        feast.set_caching_options(enable_caching=False)  # writes shared state: the Feast registry, the online store
        cluster = {"train_workers": train_workers, "train_gpus_per_worker": train_gpus_per_worker,
                   "trainer_api": trainer_api, "storage_root": where["root"], "job_placement": job_placement(platform)}
        pretrained = with_storage(on_gpu(pretrain(build=build, method=pretrain_method, negatives=negatives,
                                                  max_seq_len=max_seq_len, epochs=pretrain_epochs,
                                                  max_steps=pretrain_max_steps, patience=pretrain_patience,
                                                  lr=pretrain_lr, batch_size=pretrain_batch_size, seed=seed,
                                                  device=device, label_fraction=label_fraction,
                                                  pretrain_samples=dgenctr_pretrain_samples, **cluster),
                                         "Pretrain")).after(checked_samples)
        tuned = with_storage(on_gpu(finetune(build=build, pretrained=pretrained.outputs["pretrained"],
                                             pretrain_method=pretrain_method, backbone=backbone, transfer=transfer,
                                             max_seq_len=max_seq_len, epochs=finetune_epochs,
                                             patience=finetune_patience, label_fraction=label_fraction,
                                             integration_scale=integration_scale, decoder_lr_mult=decoder_lr_mult,
                                             lr=finetune_lr, batch_size=batch_size, seed=seed, device=device,
                                             **cluster),
                                    "Fine-tune"))
        gate = reads_registry(on_cpu(evaluate_and_gate(
            build=build, candidate=tuned.outputs["model"], registry_root=where["registry"], model_name=model_name,
            min_auc_gain=auc_margin, alpha=alpha, floor_auc=floor_auc), "Evaluate and gate"))
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
            registered = reads_registry(on_cpu(register_model(
                candidate=tuned.outputs["model"], decision=gate.outputs["decision"], registry_root=where["registry"],
                model_name=model_name, set_champion=promote_without_canary,
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), "Register model")).after(feast)
            with dsl.If(deploy_target != "none", name="deploy-enabled"):
                reads_registry(on_cpu(deploy_model(
                    feast=feast.outputs["feast_repo"], version=registered.outputs["Output"],
                    canary_percent=canary_percent, registry_root=where["registry"], model_name=model_name,
                    target=deploy_target, deployment=deployment, namespace=kserve_namespace,
                    kserve_env=kserve_env, randomisation=randomisation),
                "Deploy (champion or canary)"))  # never cached: an action

    return dsl.pipeline(name=PIPELINE_NAME, description="GenCTR/DGenCTR training: data checks, features, "
                        "pretraining, fine-tuning, champion gate, registration.")(
        prof.apply(training_pipeline, "training"))


training_pipeline = build_pipeline()  # default placement; kfp.local runs this one


def compile_pipeline(out: str | Path, platform: PlatformConfig | None = None,
                     profile: str | Profile = "local") -> Path:
    """Compile the pipeline (placed by ``platform``, default: from the environment; run-form defaults
    from ``profile``) to YAML."""
    prof = get_profile(profile)
    return compile_placed(lambda p: build_pipeline(p, prof), out, platform)


def main(argv: list[str] | None = None) -> int:
    return compile_main(build_pipeline, "training_pipeline.yaml", "Compile the genctr training pipeline to YAML "
                        "(placement from GENCTR_IMAGE, GENCTR_TRAIN_IMAGE, "
                        "GENCTR_GPU_NODE_SELECTOR, GENCTR_GPU_TOLERATIONS, GENCTR_STORAGE_SECRET).", argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
