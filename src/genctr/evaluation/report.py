"""The gate's human-readable report: one self-contained HTML page (images inlined)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from genctr.atomic import write_text
from genctr.html_report import esc, img, page


def _metrics_table(rows: dict[str, dict[str, Any] | None]) -> str:
    keys = ("auc", "logloss", "gauc", "rows")
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = ""
    for name, m in rows.items():
        if m is None:
            continue
        cells = "".join(f"<td>{m.get(k, float('nan')):.4f}</td>" if isinstance(m.get(k), float)
                        else f"<td>{m.get(k, '')}</td>" for k in keys)
        body += f"<tr><th>{esc(name)}</th>{cells}</tr>"
    return f"<table><tr><th>model</th>{head}</tr>{body}</table>"


def write_gate_report(path: str | Path, decision: dict[str, Any], images: list[Path], title: str) -> Path:
    """Write the report atomically; ``decision`` is ``GateDecision.to_dict()``."""
    verdict = "PASSED" if decision["passed"] else "REJECTED"
    colour = "#137333" if decision["passed"] else "#b3261e"
    dl = decision.get("delong") or {}
    delong = (f"<p>DeLong: AUC difference {dl['diff']:+.4f}, z = {dl['z']:.3f}, "
              f"one-sided p = {dl['p_one_sided']:.4g}</p>" if dl else "<p>No champion: floor check only.</p>")
    body = (f"<h1>{esc(title)}</h1>\n"
            f'<h2 id="decision" style="color:{colour}">Gate {verdict}</h2><p>{esc(decision["reason"])}</p>\n'
            f"{_metrics_table({'candidate': decision['candidate'], 'champion': decision.get('champion')})}\n"
            f"{delong}\n{''.join(img(p) for p in images)}\n")
    return write_text(path, page(title, body))
