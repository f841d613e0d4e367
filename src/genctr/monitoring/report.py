"""The canary analysis step's HTML page (the run page's HTML artifact): decision, reasons, arm
table, plots inline, drift summary and the Evidently report itself."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from genctr.html_report import esc, img, page


def canary_html(entry: dict[str, Any], out: Path) -> str:
    """A self-contained HTML page: the decision and its reasons, per-arm table, plots (inline PNG),
    drift summary and the Evidently report itself (inline, in an iframe)."""
    parts = [f"<h1>Canary decision: {esc(entry['action'].upper())}</h1>",
             f"<p>deployment <code>{esc(str(entry['deployment']))}</code> ({esc(str(entry['target']))}); "
             f"champion <code>{esc(str(entry['champion_uri']))}</code>; canary <code>{esc(str(entry['canary_uri']))}"
             f"</code> at {entry['canary_percent']}% of the traffic</p>",
             "<h2>Reasons</h2><ul>" + "".join(f"<li>{esc(r)}</li>" for r in entry["reasons"]) + "</ul>"]
    if entry["analysis"]:
        arms = entry["analysis"]["arms"]
        cols = list(next(iter(arms.values())))
        parts.append("<h2>Arms</h2><table class='bordered'><tr><th>arm</th>"
                     + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>"
                     + "".join(f"<tr><td>{esc(a)}</td>" + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in cols) + "</tr>"
                               for a, m in arms.items()) + "</table>")
    for key, title in (("uplift_png", "Cumulative uplift"), ("arms_png", "Per-arm metrics")):
        if key in entry["files"]:
            parts.append(f"<h2>{title}</h2>{img(out / entry['files'][key], key)}")
    drift = entry["drift"]
    if drift:
        items = "".join(f"<li>{esc(c)}: score {_fmt(v['score'])} ({esc(str(v['method']))}), "
                        f"{'DRIFTED' if v['drifted'] else 'ok'}</li>" for c, v in drift["columns"].items())
        evidently = (out / entry["files"]["drift_arms"]).read_text()
        parts.append(f"<h2>Drift: canary vs champion impressions</h2><p>{drift['drifted_columns']} drifted column(s) "
                     f"{esc(', '.join(drift['drifted']) or '-')} "
                     f"(file <code>{esc(entry['files']['drift_arms'])}</code> in the "
                     f"analysis artifact)</p><ul>{items}</ul><details><summary>Evidently report</summary>"
                     f"<iframe srcdoc=\"{esc(evidently)}\" style='width:100%;height:900px;border:0'></iframe>"
                     "</details>")
    return page(f"Canary {entry['deployment']}", "\n".join(parts))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)
