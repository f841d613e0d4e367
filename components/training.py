"""GPU training steps: generative pretraining (GenCTR / DGenCTR) and CTR fine-tuning."""

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
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str = "auto",
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
        epochs, lr, batch_size, seed, device: Training settings (genctr TrainConfig).
    """
    import json
    import os

    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    pretrained.metadata["method"] = method
    if method == "none":  # one DAG for every method: fine-tuning then starts from scratch
        os.makedirs(pretrained.path, exist_ok=True)
        with open(os.path.join(pretrained.path, "pretrain.json"), "w") as f:
            json.dump({"method": "none"}, f)
    else:
        train = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "device": device}
        model = {"max_seq_len": max_seq_len, **({"negatives": negatives} if method == "genctr" else {})}
        result = workflow.pretrain(build.path, pretrained.path, method=method, model=model, train=train)
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
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str = "auto",
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
        epochs, lr, batch_size, seed, device: Training settings (genctr TrainConfig).
    """
    import json

    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    train = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "device": device}
    # DGenCTR fine-tunes its own pretrained network: only its transfer mode applies
    spec = {"transfer": transfer} if pretrain_method == "dgenctr" else {
        "backbone": backbone, "transfer": transfer, "max_seq_len": max_seq_len}
    result = workflow.finetune(build.path, model.path, model=spec, train=train,
                               pretrained=None if pretrain_method == "none" else pretrained.path)
    for key, value in result.summary["test"].items():
        metrics.log_metric(key, float(value))
    with open(metrics.path, "w") as f:  # a file too: kfp.local's cache treats a file-less artifact as missing
        json.dump(metrics.metadata, f)
    model.metadata.update({"backbone": backbone, "transfer": transfer, "pretrain_method": pretrain_method,
                           **{f"test_{k}": float(v) for k, v in result.summary["test"].items()}})
