"""A training step that runs in its own pod or as a distributed Kubeflow training job.

``train_workers = 1`` (the run form's default) trains inside the step's pod exactly as the
pretrain / fine-tune steps always have (:func:`genctr.workflow.pretrain` / ``finetune``).
``train_workers = N > 1`` renders a ``TrainJob`` (Kubeflow Trainer v2) or a ``PyTorchJob``
(Training Operator v1) with N nodes (:mod:`genctr.orchestration.trainer_job`), submits it, waits
and surfaces its pods' logs (:mod:`genctr.orchestration.job_runner`).

Where the model lands. The job's pods share no disk with the step, so everything travels through
the storage root (:mod:`genctr.storage`), under ``<root>/train-jobs/<job name>/``:

* ``build/`` (and ``pretrained/``): the step copies its input artifacts there before submitting;
* ``model/``: node 0 of the job copies the trained artifact there, ``config.json`` last;
* the step then copies ``model/`` into its own ``Output[Model]`` directory, which KFP uploads
  as usual, so the next step (fine-tune, the gate, the registry) reads it exactly as it reads a
  model trained in the pod; the artifact's metadata records the job and ``model/``'s URI.

The job's name derives from the step's output URI: a retried step finds its earlier job (and a
finished one's model) instead of training twice. The storage root must then be an object store
(``s3://...``): a local directory of the step's pod is not reachable from the job's nodes.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from genctr.errors import ArtifactError, ConfigError, describe
from genctr.orchestration.job_runner import WaitConfig, kind_of, run_job
from genctr.orchestration.trainer_job import APIS, JobPlacement, TrainerJobSpec, job_name, render
from genctr.orchestration.trainer_node import COMPLETE_FILE, copy_tree

log = logging.getLogger(__name__)
JOBS_DIR = "train-jobs"  # under the storage root, beside registry/, builds/ and the rest
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")  # every pod has it


def check_run_form(workers: Any, gpus_per_worker: Any, trainer_api: Any) -> None:
    """The run form's three training-job parameters, whatever ``workers`` is (a typo fails every run)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"train_workers must be an integer >= 1 (1 = train in the step's pod), got "
                          f"{describe(workers)}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, int) or gpus_per_worker < 0:
        raise ConfigError(f"train_gpus_per_worker must be an integer >= 0 (0 = CPU nodes), got "
                          f"{describe(gpus_per_worker)}")
    if trainer_api not in APIS:
        raise ConfigError(f"trainer_api must be one of {APIS} (Kubeflow Trainer v2 TrainJob, Training Operator v1 "
                          f"PyTorchJob), got {describe(trainer_api)}")


def train_step(stage: str, build: str | Path, out: str | Path, *, model: dict[str, Any], train: dict[str, Any],
               method: str = "genctr", pretrained: str | Path | None = None, workers: int = 1,
               gpus_per_worker: int = 0, trainer_api: str = "trainjob", storage_root: str = "",
               placement: dict[str, Any] | None = None, job_key: str = "", wait: WaitConfig | None = None,
               clients: tuple[Any, Any] | None = None) -> Any:
    """Pretrain (``stage="pretrain"``, with ``method``) or fine-tune (``"finetune"``, from
    ``pretrained``) into ``out``; returns the :class:`genctr.workflow.StepResult`.

    ``placement`` (a :class:`JobPlacement` mapping, fixed at compile time), ``job_key`` (what the
    job's name derives from; '' = ``out``), ``wait`` and ``clients`` (CustomObjectsApi, CoreV1Api;
    None = from the pod's ServiceAccount) apply only when ``workers > 1``.
    """
    from genctr import workflow

    check_run_form(workers, gpus_per_worker, trainer_api)
    if stage not in ("pretrain", "finetune"):
        raise ConfigError(f"stage must be pretrain or finetune, got {describe(stage)}")
    if workers == 1:  # in this pod, as ever
        if stage == "pretrain":
            return workflow.pretrain(build, out, method=method, model=model, train=train)
        return workflow.finetune(build, out, model=model, train=train, pretrained=pretrained)
    return _on_cluster(stage, Path(build), Path(out), model, train, method, pretrained, workers, gpus_per_worker,
                       trainer_api, storage_root, placement, job_key or str(out), wait, clients)


def node_args(stage: str, base: str, method: str, model: dict[str, Any], train: dict[str, Any],
              pretrained: bool) -> list[str]:
    """Arguments of the node command: the storage URIs, then ``--`` and ``genctr train <stage>``'s options."""
    args = ["--stage", stage, "--build-uri", f"{base}/build", "--out-uri", f"{base}/model"]
    if pretrained:
        args += ["--pretrained-uri", f"{base}/pretrained"]
    args.append("--")
    if stage == "pretrain":
        args += ["--method", method]
    for flag, options in (("--model", model), ("--train", train)):
        for key, value in options.items():  # the CLI reads values as YAML: JSON is YAML, a str is taken as is
            args += [flag, f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def pod_namespace(path: Path = SA_NAMESPACE) -> str:
    """The namespace of the pod this runs in (the pipeline run's), from its ServiceAccount mount."""
    try:
        return path.read_text().strip()
    except OSError:
        raise ConfigError(f"no namespace for the training job: {path} is missing (not in a pod); set "
                          "job_placement.namespace") from None


def kube_clients() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) with the pod's ServiceAccount, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def _on_cluster(stage: str, build: Path, out: Path, model: dict[str, Any], train: dict[str, Any], method: str,
                pretrained: str | Path | None, workers: int, gpus: int, api: str, storage_root: str,
                placement: dict[str, Any] | None, job_key: str, wait: WaitConfig | None,
                clients: tuple[Any, Any] | None) -> Any:
    from genctr.storage import storage_layout
    from genctr.workflow import StepResult

    layout = storage_layout(storage_root, required=True)
    if not layout.is_remote:
        raise ConfigError(f"train_workers={workers} trains on {workers} pods that share no disk with this step: the "
                          f"storage root must be an object store (s3://bucket/prefix), got {layout.root}")
    if not placement or not placement.get("image"):
        raise ConfigError("train_workers > 1 needs the job's placement (job_placement: the training image, requests, "
                          "node selectors); the compiled pipeline passes it: recompile with this genctr")
    where = JobPlacement.from_dict(placement)
    name = job_name(stage, job_key)
    base = f"{layout.root}/{JOBS_DIR}/{name}"
    spec = TrainerJobSpec(name=name, namespace=where.namespace or pod_namespace(), placement=where, api=api,
                          workers=workers, gpus_per_worker=gpus,
                          args=tuple(node_args(stage, base, method, model, train, pretrained is not None)))
    log.info("staging the inputs of %s under %s", name, base)
    copy_tree(str(build), f"{base}/build")
    if pretrained is not None:
        copy_tree(str(pretrained), f"{base}/pretrained")
    manifest = render(spec)
    custom_api, core_api = clients or kube_clients()
    run_job(manifest, custom_api, core_api, wait)
    model_uri = f"{base}/model"
    try:
        copy_tree(model_uri, str(out))
    except ConfigError:
        raise ArtifactError(f"{manifest['kind']} {spec.namespace}/{name} succeeded but left no model at {model_uri}"
                            ) from None
    if not (out / COMPLETE_FILE).is_file():
        raise ArtifactError(f"the model at {model_uri} is incomplete (no {COMPLETE_FILE}): node 0 did not finish "
                            "copying it")
    summary = json.loads((out / "metrics.json").read_text())
    summary["job"] = {"kind": kind_of(manifest).kind, "name": name, "namespace": spec.namespace, "nodes": workers,
                      "gpus_per_node": gpus, "model_uri": model_uri}
    return StepResult(str(out), summary)


__all__ = ["JOBS_DIR", "check_run_form", "kube_clients", "node_args", "pod_namespace", "train_step"]
