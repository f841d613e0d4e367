"""``genctr evaluate``: a candidate against the registry's champion on the same rows (the AUC gate)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError


def evaluate_cmd(
    build: Path = typer.Option(..., help="Feature build directory (its test split is scored)."),
    candidate: Path = typer.Option(..., help="Candidate model artifact."),
    registry: str = typer.Option("", help="Registry: path, fsspec URI, mlflow+http://HOST:PORT or "
                                          "kubeflow-mr://HOST:PORT?storage=URI; default $GENCTR_HOME/registry."),
    name: str = typer.Option("ctr", help="Model name in the registry."),
    out: Path | None = typer.Option(None, help="Report directory (default CANDIDATE.gate)."),
    gate: list[str] = typer.Option([], "--gate", help="Gate option, e.g. --gate min_auc_gain=0.002."),
) -> None:
    """Evaluate a candidate against the registry's champion on the same rows (the AUC gate).

    Prints the decision as JSON. Exit code: 0 the candidate passed, 3 the gate rejected it,
    2 bad input (nothing evaluated).
    """
    from genctr.champion import REJECTED_EXIT
    from genctr.config import parse_assignments
    from genctr.evaluation.gate import GateConfig
    from genctr.paths import home
    from genctr.workflow import evaluate_gate

    def go() -> dict[str, Any]:
        root = registry or str(home() / "registry")
        dest = out or candidate.with_name(candidate.name + ".gate")
        res = evaluate_gate(build, candidate, root, name, parse_assignments(GateConfig, gate, "gate"), dest)
        s = res.summary
        return {"passed": s["passed"], "reason": s["reason"], "report": res.path,
                "candidate": s["candidate"], "champion": s["champion"]}

    try:
        decision = go()
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(decision, indent=2, default=float))
    if not decision["passed"]:
        raise typer.Exit(code=REJECTED_EXIT)


__all__ = ["evaluate_cmd"]
