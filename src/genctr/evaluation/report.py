"""The gate's human-readable report: one self-contained HTML page (images inlined)."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from genctr.atomic import write_text


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:640px">'


def _metrics_table(rows: dict[str, dict[str, Any] | None]) -> str:
    keys = ("auc", "logloss", "gauc", "rows")
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = ""
    for name, m in rows.items():
        if m is None:
            continue
        cells = "".join(f"<td>{m.get(k, float('nan')):.4f}</td>" if isinstance(m.get(k), float)
                        else f"<td>{m.get(k, '')}</td>" for k in keys)
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    return f"<table><tr><th>model</th>{head}</tr>{body}</table>"


def write_gate_report(path: str | Path, decision: dict[str, Any], images: list[Path], title: str) -> Path:
    """Write the report atomically; ``decision`` is ``GateDecision.to_dict()``."""
    verdict = "PASSED" if decision["passed"] else "REJECTED"
    colour = "#137333" if decision["passed"] else "#b3261e"
    dl = decision.get("delong") or {}
    delong = (f"<p>DeLong: AUC difference {dl['diff']:+.4f}, z = {dl['z']:.3f}, "
              f"one-sided p = {dl['p_one_sided']:.4g}</p>" if dl else "<p>No champion: floor check only.</p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:900px}} td,th{{padding:4px 10px;text-align:right}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2 id="decision" style="color:{colour}">Gate {verdict}</h2><p>{html.escape(decision['reason'])}</p>
{_metrics_table({'candidate': decision['candidate'], 'champion': decision.get('champion')})}
{delong}
{''.join(_img(p) for p in images)}
</body></html>"""
    return write_text(path, page)
