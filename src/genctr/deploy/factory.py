"""One setting picks the deployment: ``local`` (a ModelServer on this machine) or ``kserve``
(an InferenceService on the cluster). Pipelines and the canary loop build their deployer here."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from genctr.deploy.base import RANDOMISATIONS, Deployer
from genctr.errors import ConfigError

TARGETS = ("local", "kserve")


@dataclass
class DeployTarget:
    """Where models are served.

    ``local``: champion and canary in one KServe ModelServer on loopback; its state file is
    ``<state_dir>/<name>.json`` and it reads the Feast store in ``feast_repo`` ('' = none); its
    payload logger posts to the A/B log sink at ``logger_url`` and ``randomisation`` picks the
    design, ``user`` (the user-hash router in front) or ``request`` (clients split per request);
    '' for either keeps what the deployment recorded (``user`` for a new one). See
    :class:`genctr.deploy.local.LocalDeployer`.
    ``kserve``: the InferenceService ``name`` in ``namespace`` (manifest defaults of ``env``);
    ``randomisation`` ``user`` sets the user-hash router's split on every rollout step, ``request``
    (or '': the environment's, ``request``) leaves the split to Knative. See
    :class:`genctr.deploy.cluster.KServeDeployer`.
    """

    kind: str = "local"
    name: str = "genctr-ctr"
    namespace: str = "genctr"
    env: str = "prod"  # kserve: manifests.ENVIRONMENTS key supplying resources etc.
    state_dir: str = ""  # local: '' = $GENCTR_HOME/deploy
    feast_repo: str = ""  # local: feature_store.yaml directory for the server
    logger_url: str = ""  # local: the A/B log sink the server's payload logger posts to ('' = as recorded)
    randomisation: str = ""  # "user" | "request" (local: '' = as recorded, "user" when new; kserve: '' = "request")

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise ConfigError(f"deploy target must be one of {TARGETS}, got {self.kind!r}")
        if not self.name or not self.name.replace("-", "").isalnum() or self.name != self.name.lower():
            raise ConfigError(f"deploy name must be a lower-case DNS label (letters, digits, '-'), got {self.name!r}")
        if self.randomisation not in ("", *RANDOMISATIONS):
            raise ConfigError(f"deploy randomisation must be one of {list(RANDOMISATIONS)} (or '' for the "
                              f"deployment's own), got {self.randomisation!r}")

    def state_file(self) -> Path:
        from genctr.paths import home

        return Path(self.state_dir or home() / "deploy") / f"{self.name}.json"


def make_deployer(target: DeployTarget) -> Deployer:
    if target.kind == "local":
        from genctr.deploy.local import LocalDeployer
        from genctr.serving.online import FeastConfig

        feast = FeastConfig(repo_path=target.feast_repo) if target.feast_repo else None
        return LocalDeployer(target.state_file(), name=target.name, feast=feast, logger_url=target.logger_url,
                             randomisation=target.randomisation)
    from genctr.deploy.cluster import KServeDeployer
    from genctr.deploy.manifests import ENVIRONMENTS

    if target.env not in ENVIRONMENTS:
        raise ConfigError(f"kserve env must be one of {sorted(ENVIRONMENTS)}, got {target.env!r}")
    manifest = dataclasses.replace(ENVIRONMENTS[target.env], name=target.name, namespace=target.namespace,
                                   randomisation=target.randomisation or ENVIRONMENTS[target.env].randomisation)
    return KServeDeployer(manifest)
