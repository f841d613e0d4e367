"""Compile profiles: which defaults a compiled pipeline's run form starts with.

A run started from the Kubeflow UI with the form's defaults must work where it runs. ``local``
keeps the laptop defaults (ModelServer on this machine, SQLite Feast store, storage under
``$GENCTR_HOME``); ``cluster`` serves through KServe, keeps Feast's online store in the
in-cluster Redis, and requires a storage root that every pod shares: a run whose
``storage_root`` parameter and ``$GENCTR_STORAGE_ROOT`` are both unset fails at its first
step with a message naming both. Only defaults change; every parameter stays overridable.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from genctr.errors import ConfigError

# The Redis Service of the Feast online store inside the cluster (namespace genctr); serving pods
# read the same store through the genctr-redis Secret (manifests/kserve).
CLUSTER_REDIS = "genctr-redis.genctr.svc.cluster.local:6379"


@dataclass(frozen=True)
class Profile:
    """Run-form defaults per pipeline (``training`` | ``canary``) and whether a storage root is required."""

    name: str
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    storage_required: bool = False  # True: no fallback to $GENCTR_HOME (pod-local on a cluster)

    def __post_init__(self) -> None:  # read-only: a profile is shared module state
        object.__setattr__(self, "defaults", MappingProxyType({k: MappingProxyType(dict(v))
                                                               for k, v in self.defaults.items()}))

    def defaults_for(self, pipeline: str) -> Mapping[str, Any]:
        return self.defaults.get(pipeline, MappingProxyType({}))

    def apply(self, func: Callable[..., Any], pipeline: str) -> Callable[..., Any]:
        """Give ``func`` (a pipeline function, before ``@dsl.pipeline``) this profile's defaults.

        KFP reads the run form's defaults from the function's signature; replacing
        ``__defaults__`` changes the signature and the Python defaults together. A default for
        a parameter ``func`` lacks is an error (a renamed parameter must not drop silently).
        """
        overrides = dict(self.defaults_for(pipeline))
        params = list(inspect.signature(func).parameters.values())
        unknown = sorted(set(overrides) - {p.name for p in params})
        if unknown:
            raise ConfigError(f"profile {self.name!r} sets unknown {pipeline} pipeline parameter(s) {unknown}")
        if any(p.default is inspect.Parameter.empty or p.kind is not p.POSITIONAL_OR_KEYWORD for p in params):
            raise ConfigError(f"{func.__name__}: every pipeline parameter needs a default to take a profile's")
        func.__defaults__ = tuple(overrides.get(p.name, p.default) for p in params)
        return func


PROFILES: Mapping[str, Profile] = MappingProxyType({
    "local": Profile("local"),
    "cluster": Profile("cluster", storage_required=True, defaults={
        "training": {"deploy_target": "kserve", "online_store": "redis", "redis_url": CLUSTER_REDIS},
        "canary": {"deploy_target": "kserve"},
    }),
})


def get_profile(name: str | Profile = "local") -> Profile:
    """The profile called ``name`` (``local`` | ``cluster``); a Profile is returned as it is."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
