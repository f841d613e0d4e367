"""The one place container images are named.

Components are declared with the default images (importing this module reads nothing);
the pipeline builder stamps every task with :func:`cpu_image` or :func:`train_image`,
which read ``GENCTR_IMAGE`` / ``GENCTR_TRAIN_IMAGE`` when called, i.e. at compile time.
"""
from __future__ import annotations

import os
from typing import Any

from kfp import dsl

DEFAULT_IMAGE = "ghcr.io/genctr/genctr:0.1.0"  # container-images/Dockerfile: CPU, Java 17 for Spark
DEFAULT_TRAIN_IMAGE = "ghcr.io/genctr/genctr:0.1.0-cuda"  # container-images/Dockerfile.cuda: pretrain/fine-tune


def cpu_image() -> str:
    """Image of the data, gate and registry steps (``$GENCTR_IMAGE`` or the default)."""
    return os.environ.get("GENCTR_IMAGE") or DEFAULT_IMAGE


def train_image() -> str:
    """Image of the GPU training steps (``$GENCTR_TRAIN_IMAGE`` or the default)."""
    return os.environ.get("GENCTR_TRAIN_IMAGE") or DEFAULT_TRAIN_IMAGE


def component(func: Any = None, *, base_image: str = DEFAULT_IMAGE) -> Any:
    """``@dsl.component`` with the project's settings: no per-task pip installs at all."""
    decorate = dsl.component(base_image=base_image, packages_to_install=[], install_kfp_package=False)
    return decorate if func is None else decorate(func)
