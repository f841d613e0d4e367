"""The run's shared locations: one storage root resolved once, at the first step."""

from typing import NamedTuple

from kfp.dsl import Markdown, Output

from components.images import component


@component
def resolve_storage(
    run_id: str,
    locations: Output[Markdown],
    storage_root: str = "",
    required: bool = False,
    online_store: str = "sqlite",
    deployment: str = "genctr-ctr",
    registry_root: str = "",
    log_dir: str = "",
) -> NamedTuple("Storage", [("root", str), ("registry", str), ("feast_registry", str),  # type: ignore[valid-type]  # noqa: UP014 - KFP reads the call form (named outputs); the shipped source has no module-level class
                            ("build", str), ("ab_logs", str), ("reports", str)]):
    """Resolve the storage root and derive every shared location of this run (genctr.storage).

    Fails the run here, before any work, when the root is missing (``required``) or unreachable.
    Resolved once so every later pod uses the same locations whatever its own environment.

    Args:
        run_id: The pipeline run's id (names builds/<run id> and reports/<run id>).
        locations: The resolved locations, as Markdown for the run page.
        storage_root: Object-store URI or local path ('' = $GENCTR_STORAGE_ROOT, then, unless
            ``required``, $GENCTR_HOME).
        required: No fallback to $GENCTR_HOME (the cluster profile: it would be pod-local).
        online_store: Feast online store whose registry is derived (sqlite | redis).
        deployment: Deployment whose A/B log directory is derived.
        registry_root: Explicit model registry ('' = <root>/registry).
        log_dir: Explicit A/B log directory ('' = <root>/ab-logs/<deployment>).
    """
    from collections import namedtuple

    from genctr.logging_setup import setup_logging
    from genctr.storage import run_locations

    setup_logging()
    where = run_locations(storage_root, required=required, run_id=run_id, online_store=online_store,
                          deployment=deployment, registry_root=registry_root, log_dir=log_dir)
    with open(locations.path, "w") as f:
        f.write("# Storage\n\n" + "".join(f"- {key}: `{value}`\n" for key, value in where.items()))
    return namedtuple("Storage", list(where))(**where)
