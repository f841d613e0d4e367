"""What one turn of the canary loop records: ``decision.json``, the action's result, the history.

``decision.json`` is a :class:`CanaryDecision`, written only by :func:`write_decision` (the one
place its shape is made) and read back by :func:`read_decision` (the act step)::

    {
      "time": 1717171717.2,          # epoch seconds the decision was made
      "deployment": "genctr-ctr",    # deployment / InferenceService name
      "target": "local",             # local | kserve | null (judged through a bare Deployer)
      "champion_uri": "s3://...",    # as judged, before any action
      "canary_uri": "s3://...",      # null: no canary in progress (then action is "continue")
      "canary_percent": 50,          # split the logs were produced under (0: no canary)
      "action": "promote",           # promote | rollback | continue
      "reasons": ["CTR uplift +4.10% (95% CI [+1.20%, +7.00%]): lower bound > threshold +0.00%"],
      "numbers": {"ctr_uplift": 0.041, "ctr_lo": 0.012, ..., "srm_p": 0.61},  # {} without analysis
      "policy": {"alpha": 0.05, "min_users_per_arm": 200, ...},   # the CanaryPolicy judged under
      "analysis": {"arms": {...}, "ctr": {...}, "rpm": {...}, "srm": {...}, ...},  # or null
      "drift": {"drifted_columns": 0, "columns": {...}, ...},     # canary vs champion, or null
      "files": {"analysis": "analysis.json", "arms": "arms.csv", "uplift_png": "uplift.png", ...}
    }

``files`` names are relative to the directory of ``decision.json`` (a pipeline artifact moves).
What the act step did is a :class:`CanaryResult`; ``decisions.jsonl`` (:func:`append_turn`) holds
one line per turn: the decision's fields plus ``"result"`` (the CanaryResult, or null when the
turn stopped at the decision). Numbers that are not finite are written as null, so strict JSON
parsers (a browser's ``JSON.parse``) read every file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genctr.atomic import write_json, write_text
from genctr.errors import ArtifactError
from genctr.monitoring.analysis import json_safe

DECISION_FILE = "decision.json"
HISTORY_FILE = "decisions.jsonl"
ACTED = ("promoted", "rolled back", "none")


@dataclass
class CanaryDecision:
    """The verdict of one turn; its JSON form is ``decision.json`` (shape in the module docstring)."""

    time: float
    deployment: str
    target: str | None
    champion_uri: str | None
    canary_uri: str | None
    canary_percent: int
    action: str  # genctr.monitoring.decision.ACTIONS
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe (NaN/inf -> None) plain dict."""
        return json_safe(dataclasses.asdict(self))


@dataclass
class CanaryResult:
    """What the act step did about a :class:`CanaryDecision` (the pipeline's act step returns it)."""

    action: str  # the decision's action
    acted: str  # one of ACTED: "none" for continue and for a dry run
    dry_run: bool
    deployment: str
    canary_uri: str | None  # the canary that was judged
    canary_version: int | None  # its registry version, when the registry has it
    champion_uri: str | None  # after the action
    registry_champion: int | None  # the registry's champion version after the action (None: no registry)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))


def write_decision(out_dir: str | Path, decision: CanaryDecision) -> Path:
    """``<out_dir>/decision.json``, atomically (serialised first: a failure writes nothing)."""
    return write_json(Path(out_dir) / DECISION_FILE, decision.to_dict(), allow_nan=False)


def read_decision(analysis_dir: str | Path) -> CanaryDecision:
    """The :class:`CanaryDecision` in ``<analysis_dir>/decision.json``."""
    path = Path(analysis_dir) / DECISION_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: give the directory the analyse step wrote")
    data = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(CanaryDecision)}
    if not isinstance(data, dict) or not {"deployment", "canary_uri", "action", "reasons"} <= set(data):
        raise ArtifactError(f"{path} is not a canary decision (expected the keys {sorted(names)})")
    return CanaryDecision(**{k: v for k, v in data.items() if k in names})


def append_line(path: str | Path, obj: Any) -> None:
    """Append one JSON line to ``path`` by rewriting it whole (temporary file + rename).

    A decision log grows by one short line per canary turn, so the copy is cheap, and a crash
    leaves the old file or the new one, never a torn last line.
    """
    path = Path(path)
    line = json.dumps(json_safe(obj), allow_nan=False) + "\n"  # serialised first: a failure writes nothing
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"  # a line written by an older version without its newline stays a line of its own
    write_text(path, old + line)


def turn_line(decision: CanaryDecision, result: CanaryResult | None) -> dict[str, Any]:
    """One ``decisions.jsonl`` line: the decision's fields plus ``result``."""
    return {**decision.to_dict(), "result": result.to_dict() if result is not None else None}


def append_turn(out_dir: str | Path, decision: CanaryDecision, result: CanaryResult | None) -> Path:
    """Append the turn to ``<out_dir>/decisions.jsonl``."""
    path = Path(out_dir) / HISTORY_FILE
    append_line(path, turn_line(decision, result))
    return path


__all__ = ["ACTED", "DECISION_FILE", "HISTORY_FILE", "CanaryDecision", "CanaryResult", "append_line",
           "append_turn", "read_decision", "turn_line", "write_decision"]
