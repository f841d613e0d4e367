"""GPU training steps: generative pretraining (GenCTR / DGenCTR) and CTR fine-tuning.

Each trains in its own pod (``train_workers=1``) or, with ``train_workers > 1``, submits a
Kubeflow TrainJob / PyTorchJob with that many nodes, waits for it and copies its model into the
step's output (``genctr.orchestration.training_step``).
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import DEFAULT_TRAIN_IMAGE, component


@component(base_image=DEFAULT_TRAIN_IMAGE)
def pretrain(
    build: Input[Dataset],
    pretrained: Output[Model],
    metrics: Output[Metrics],
    method: str = "genctr",
    negatives: str = "cs",
    max_seq_len: int = 200,
    epochs: int = 1,
    max_steps: int = 600,
    patience: int = 10,
    lr: float = 1e-3,
    batch_size: int = 0,
    seed: int = 0,
    device: str = "auto",
    label_fraction: float = 1.0,
    pretrain_samples: str = "impressions",
    train_workers: int = 1,
    train_gpus_per_worker: int = 0,
    trainer_api: str = "trainjob",
    storage_root: str = "",
    job_placement: Optional[dict] = None,  # noqa: UP045 - KFP reads typing.Optional, not `dict | None`
):
    """Pretrain on the build's train split; ``method="none"`` skips pretraining.

    Args:
        build: Feature build directory.
        pretrained: Output model directory (model.safetensors, config.json, metrics.json);
            with ``method="none"`` only a ``pretrain.json`` marker.
        metrics: Final-epoch training metrics.
        method: ``genctr`` (causal decoder), ``dgenctr`` (discrete diffusion) or ``none``.
        negatives: GenCTR sampled softmax negatives: ``cs`` (same category) or ``rs`` (random);
            unused by DGenCTR.
        max_seq_len: L, as in the feature build.
        epochs: Passes over the pretraining windows (used when ``max_steps`` is 0).
        max_steps: Optimizer steps of the budget (> 0 replaces ``epochs``).
        patience: Stop once this many epochs bring no better held-out loss, keeping the best
            epoch's weights (0 = train the whole budget).
        batch_size: Windows (GenCTR) or samples (DGenCTR) per step; 0 = the method's default
            (``genctr.training.config.PRETRAIN_BATCH``).
        lr, seed, device: Training settings (genctr TrainConfig).
        label_fraction: DGenCTR: the labelled share of the training impressions, as fine-tuning's
            (the same seeded draw): pretraining's label field sees only those labels. Unused by GenCTR,
            whose pretraining reads behaviour only.
        pretrain_samples: DGenCTR's corpus: ``impressions`` | ``behaviours`` (the labelled
            impressions plus every training behaviour as an unlabelled sample) | ``both``.
        train_workers: 1 = train in this pod; N > 1 = a training job with N nodes.
        train_gpus_per_worker: GPUs of each job node (0 = CPU nodes); unused with one worker.
        trainer_api: ``trainjob`` (Kubeflow Trainer v2) | ``pytorchjob`` (Training Operator v1).
        storage_root: Object store the job's nodes read the build from and write the model to.
        job_placement: The job pods' image, requests, node selector, tolerations, storage Secret
            (``genctr.orchestration.trainer_job.JobPlacement``; set at compile time).
    """
    import json
    import os

    from genctr.logging_setup import setup_logging
    from genctr.orchestration.training_step import check_run_form, train_step

    setup_logging()
    check_run_form(train_workers, train_gpus_per_worker, trainer_api)
    pretrained.metadata["method"] = method
    if method == "none":  # one DAG for every method: fine-tuning then starts from scratch
        os.makedirs(pretrained.path, exist_ok=True)
        with open(os.path.join(pretrained.path, "pretrain.json"), "w") as f:
            json.dump({"method": "none"}, f)
    else:
        from genctr.training.config import pretrain_batch_size

        train = {"epochs": epochs, "max_steps": max_steps, "patience": patience, "lr": lr, "seed": seed,
                 "batch_size": pretrain_batch_size(method, batch_size), "device": device,
                 **({"label_fraction": label_fraction} if method == "dgenctr" else {})}
        model = {"max_seq_len": max_seq_len, **({"negatives": negatives} if method == "genctr"
                                                else {"pretrain_samples": pretrain_samples})}
        result = train_step("pretrain", build.path, pretrained.path, method=method, model=model, train=train,
                            workers=train_workers, gpus_per_worker=train_gpus_per_worker, trainer_api=trainer_api,
                            storage_root=storage_root, placement=job_placement, job_key=pretrained.uri)
        if "job" in result.summary:  # trained on a cluster job: which one, and where its model was copied from
            pretrained.metadata["trainer_job"] = result.summary["job"]
        for key, value in (result.summary.get("history") or [{}])[-1].items():
            if isinstance(value, (int, float)):
                metrics.log_metric(f"pretrain_{key}", float(value))
    with open(metrics.path, "w") as f:  # a file too: kfp.local's cache treats a file-less artifact as missing
        json.dump(metrics.metadata, f)


@component(base_image=DEFAULT_TRAIN_IMAGE)
def finetune(
    build: Input[Dataset],
    pretrained: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    pretrain_method: str = "genctr",
    backbone: str = "dnn",
    transfer: str = "share",
    max_seq_len: int = 200,
    epochs: int = 10,
    patience: int = 2,
    label_fraction: float = 1.0,
    integration_scale: str = "none",
    decoder_lr_mult: float = 1.0,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str = "auto",
    train_workers: int = 1,
    train_gpus_per_worker: int = 0,
    trainer_api: str = "trainjob",
    storage_root: str = "",
    job_placement: Optional[dict] = None,  # noqa: UP045 - KFP reads typing.Optional, not `dict | None`
):
    """Fine-tune a CTR backbone (optionally from the pretrained model); test AUC/LogLoss/gAUC.

    Args:
        build: Feature build directory.
        pretrained: The pretrain step's output (ignored when ``pretrain_method`` is ``none``).
        model: Output model directory (model.safetensors, config.json, metrics.json).
        metrics: Test-split ``auc``, ``logloss``, ``gauc``.
        pretrain_method: What the pretrain step ran; ``none`` = train from scratch.
        backbone: ``dnn`` | ``dcnv2`` | ``dcnv2_ta`` (not used after DGenCTR: it fine-tunes its own network).
        transfer: GenCTR or none: ``none`` | ``share`` | ``integrate``; DGenCTR: ``full`` |
            ``embedding_only`` | ``scorer_only``. Without pretraining it must be ``none``.
        max_seq_len: L, as in the feature build.
        epochs: The budget in passes over the labelled impressions.
        patience: Stop once this many epochs bring no better valid LogLoss, keeping the best
            epoch's weights (0 = train every epoch and keep the last).
        label_fraction: Share of the training impressions whose labels fine-tuning uses, in (0, 1]
            (seeded; pretraining still sees all training behaviour).
        integration_scale: ``transfer=integrate``: ``none`` (the decoder feature as it is) or
            ``match`` (brought to the scale of the embeddings beside it).
        decoder_lr_mult: ``transfer=integrate``: the decoder's learning rate factor (0 = frozen).
        lr, batch_size, seed, device: Training settings (genctr TrainConfig).
        train_workers, train_gpus_per_worker, trainer_api, storage_root, job_placement: As for
            ``pretrain``: one worker trains in this pod, more run a training job.
    """
    import json

    from genctr.logging_setup import setup_logging
    from genctr.orchestration.training_step import train_step

    setup_logging()
    train = {"epochs": epochs, "patience": patience, "label_fraction": label_fraction, "lr": lr,
             "batch_size": batch_size, "seed": seed, "device": device, "decoder_lr_mult": decoder_lr_mult}
    # DGenCTR fine-tunes its own pretrained network: only its transfer mode applies
    spec = {"transfer": transfer} if pretrain_method == "dgenctr" else {
        "backbone": backbone, "transfer": transfer, "max_seq_len": max_seq_len, "integration_scale": integration_scale}
    result = train_step("finetune", build.path, model.path, model=spec, train=train,
                        pretrained=None if pretrain_method == "none" else pretrained.path, workers=train_workers,
                        gpus_per_worker=train_gpus_per_worker, trainer_api=trainer_api, storage_root=storage_root,
                        placement=job_placement, job_key=model.uri)
    for key, value in result.summary["test"].items():
        metrics.log_metric(key, float(value))
    with open(metrics.path, "w") as f:  # a file too: kfp.local's cache treats a file-less artifact as missing
        json.dump(metrics.metadata, f)
    model.metadata.update({"backbone": backbone, "transfer": transfer, "pretrain_method": pretrain_method,
                           **{f"test_{k}": float(v) for k, v in result.summary["test"].items()},
                           **({"trainer_job": result.summary["job"]} if "job" in result.summary else {})})
