"""Cluster placement of a compiled pipeline: images, GPU requests, node selection, secrets.

None of this changes what a task computes, so it is fixed at compile time (not a run
parameter): ``PlatformConfig.from_env()`` reads ``GENCTR_*`` variables when called; the
CLI (``genctr pipeline compile``) overrides them with flags. Locally (kfp.local) resource
and Kubernetes settings are ignored.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import images
from genctr.errors import ConfigError

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# Keys of the storage Secret (manifests/storage-secret.yaml) exposed to registry steps as env.
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Toleration:
    """A pod toleration; ``value`` '' means operator Exists."""

    key: str
    effect: str = "NoSchedule"
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """kubectl-taint syntax: ``key[=value]:Effect``, e.g. ``nvidia.com/gpu:NoSchedule``."""
        m = re.fullmatch(r"([^=:\s]+)(?:=([^:\s]*))?(?::([A-Za-z]+))?", text.strip())
        if not m or (m.group(3) or "NoSchedule") not in EFFECTS:
            raise ConfigError(f"toleration {text!r}: expected key[=value][:effect], effect one of {EFFECTS}")
        return cls(key=m.group(1), value=m.group(2) or "", effect=m.group(3) or "NoSchedule")

    @property
    def operator(self) -> str:
        return "Equal" if self.value else "Exists"


@dataclass(frozen=True)
class PlatformConfig:
    """Where and how the pipeline's pods run on the cluster."""

    image: str = images.DEFAULT_IMAGE  # data, gate and registry steps
    train_image: str = images.DEFAULT_TRAIN_IMAGE  # pretrain and fine-tune steps
    accelerator_type: str = "nvidia.com/gpu"  # resource name of the GPU device plugin
    gpus: int = 1  # per training task
    train_cpu: str = "4"  # training task requests (data loading happens on device)
    train_memory: str = "16Gi"
    spark_cpu: str = "2"  # feature build request (Spark local[*] inside the pod)
    spark_memory: str = "8Gi"
    # e.g. {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Toleration, ...] = ()  # e.g. (Toleration("nvidia.com/gpu"),)
    storage_secret: str = ""  # Secret with object-store credentials for registry steps; '' = none

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ConfigError(f"gpus must be >= 0, got {self.gpus}")

    @classmethod
    def from_env(cls, **overrides: object) -> PlatformConfig:
        """Read ``GENCTR_IMAGE``, ``GENCTR_TRAIN_IMAGE``, ``GENCTR_GPU_NODE_SELECTOR`` (k=v,...),
        ``GENCTR_GPU_TOLERATIONS`` (key[=value][:effect],...) and ``GENCTR_STORAGE_SECRET``."""
        env = os.environ
        values: dict[str, Any] = {
            "image": images.cpu_image(),
            "train_image": images.train_image(),
            "gpu_node_selector": parse_labels(env.get("GENCTR_GPU_NODE_SELECTOR", "")),
            "gpu_tolerations": tuple(Toleration.parse(t) for t in _split(env.get("GENCTR_GPU_TOLERATIONS", ""))),
            "storage_secret": env.get("GENCTR_STORAGE_SECRET", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_labels(text: str | list[str]) -> dict[str, str]:
    """``"k=v,k2=v2"`` (or a list of ``k=v``) -> dict."""
    labels: dict[str, str] = {}
    for item in _split(text) if isinstance(text, str) else text:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"node selector {item!r}: expected label=value")
        labels[key.strip()] = value.strip()
    return labels


def _split(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.split(",")) if part]


def compile_placed(build_pipeline: Callable[[PlatformConfig], Any], out: str | Path,
                   platform: PlatformConfig | None = None) -> Path:
    """Compile ``build_pipeline(platform)`` (default placement: from the environment) to YAML at ``out``."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(platform or PlatformConfig.from_env()), str(out))
    return out


def compile_main(build_pipeline: Callable[[PlatformConfig], Any], default_out: str, description: str,
                 argv: list[str] | None = None) -> int:
    """``python pipelines/<name>_pipeline.py --out FILE``: compile with placement from the environment."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help="Output YAML path.")
    print(compile_placed(build_pipeline, parser.parse_args(argv).out))
    return 0
