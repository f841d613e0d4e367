"""``genctr evaluate``: a candidate against the registry's champion on the same rows (the AUC gate)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import print_json


def evaluate_cmd(
    build: Path = typer.Option(..., help="Feature build directory (its test split is scored)."),
    candidate: Path = typer.Option(..., help="Candidate model artifact."),
    registry: str = typer.Option("", help="Registry root (path or fsspec URI); default $GENCTR_HOME/registry."),
    name: str = typer.Option("ctr", help="Model name in the registry."),
    out: Path | None = typer.Option(None, help="Report directory (default CANDIDATE.gate)."),
    gate: list[str] = typer.Option([], "--gate", help="Gate option, e.g. --gate min_auc_gain=0.002."),
) -> None:
    """Evaluate a candidate against the registry's champion on the same rows (the AUC gate)."""
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

    print_json(go)


__all__ = ["evaluate_cmd"]
