"""Deployment: render KServe manifests and roll models out champion -> canary -> promote/rollback.

* :mod:`genctr.deploy.base` — the :class:`Deployer` interface and :class:`DeploymentStatus`
* :mod:`genctr.deploy.cluster` — :class:`KServeDeployer` (InferenceService, Knative mode, KServeClient)
* :mod:`genctr.deploy.local` — :class:`LocalDeployer` (one local ModelServer, JSON state file)
* :mod:`genctr.deploy.manifests` — InferenceService / ServingRuntime from the SDK types, kustomize tree
"""
from genctr.deploy.base import CANARY, CHAMPION, Deployer, DeploymentStatus, assign_arm

__all__ = ["CANARY", "CHAMPION", "Deployer", "DeploymentStatus", "assign_arm"]
