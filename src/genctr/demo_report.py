"""The demo's one HTML page: offline quality, the gate, the canary's A/B uplift and the decision.

Self-contained except for the Evidently drift reports (several MB each), which are linked
by relative path from the same directory. Figures are PNGs inlined as data URIs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genctr.atomic import write_text
from genctr.html_report import esc, img, page

if TYPE_CHECKING:
    from genctr.demo import DemoResult




def _num(x: Any, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt) if isinstance(x, (int, float)) else esc(x)


def _metrics_rows(models: dict[str, dict[str, Any] | None]) -> str:
    rows = "".join(f"<tr><td>{esc(n)}</td><td>{_num(m.get('auc'))}</td><td>{_num(m.get('logloss'))}</td>"
                   f"<td>{_num(m.get('gauc'))}</td></tr>" for n, m in models.items() if m)
    return f"<table><tr><th>model</th><th>AUC</th><th>LogLoss</th><th>gAUC</th></tr>{rows}</table>"


def _figures(out: Path, tag: str, gate: dict[str, Any] | None, model_dir: str | None) -> str:
    """ROC (from the gate's stored points) and the candidate's training curves, as PNGs in ``out``."""
    from genctr.evaluation.plots import plot_roc_points, plot_training_curves

    parts = []
    if gate and gate.get("roc"):
        roc = gate["roc"]
        auc = {"candidate": gate["candidate"]["auc"]}
        if gate.get("champion"):
            auc["champion"] = gate["champion"]["auc"]
        parts.append(img(plot_roc_points(roc, out / f"{tag}_roc.png", title=f"ROC on the test split ({tag})",
                                          auc=auc), "ROC"))
    if model_dir and (Path(model_dir) / "metrics.json").is_file():
        history = json.loads((Path(model_dir) / "metrics.json").read_text()).get("history") or []
        if history:
            parts.append(img(plot_training_curves(history, out / f"{tag}_training.png",
                                                   title=f"training curves ({tag})"), "training curves"))
    return "".join(parts)


def _gate_section(title: str, gate: dict[str, Any] | None, figures: str, report: str | None, root: Path) -> str:
    if not gate:
        return f"<h2>{esc(title)}</h2><p>The gate did not run.</p>"
    verdict = "PASSED" if gate["passed"] else "REJECTED"
    dl = gate.get("delong") or {}
    delong = (f"<p>DeLong test: AUC difference {dl['diff']:+.4f}, one-sided p = {dl['p_one_sided']:.3g}</p>"
              if dl else "<p>First model: checked against the AUC floor only.</p>")
    link = f'<p>Full gate report: <a href="{esc(os.path.relpath(report, root))}">gate report</a></p>' if report else ""
    return (f"<h2>{esc(title)}</h2><p><b>Gate {verdict}</b>: {esc(gate['reason'])}</p>{delong}"
            + _metrics_rows({"candidate": gate.get("candidate"), "champion": gate.get("champion")})
            + figures + link)


def _canary_section(canary: dict[str, Any], root: Path) -> str:
    if not canary:
        return "<h2>Canary</h2><p>No canary ran (the candidate did not pass the gate).</p>"
    a = canary["analysis"]
    arms = a["arms"]
    keys = ("users", "requests", "impressions", "clicks", "ctr", "rpm", "error_rate", "latency_p99_ms")
    rows = "".join(f"<tr><td>{esc(arm)}</td>" + "".join(f"<td>{_num(m.get(k), '.4g')}</td>" for k in keys) + "</tr>"
                   for arm, m in arms.items())
    table = f"<table><tr><th>arm</th>{''.join(f'<th>{k}</th>' for k in keys)}</tr>{rows}</table>"
    up = "".join(f"<tr><td>{name.upper()}</td><td>{_num(u.get('estimate'), '+.2%')}</td>"
                 f"<td>[{_num(u.get('lo'), '+.2%')}, {_num(u.get('hi'), '+.2%')}]</td>"
                 f"<td>{_num(u.get('p_value'), '.3g')}</td></tr>"
                 for name, u in (("ctr", a["ctr"]), ("rpm", a["rpm"])))
    unit = a.get("unit", "user")  # the randomisation unit: "user" (the router's hash) or "request"
    uplift = (f"<table><tr><th>metric</th><th>relative uplift (canary vs champion)</th>"
              f"<th>{100 * (1 - a['alpha']):.0f}% CI (delta method, {unit} level)</th><th>p</th></tr>{up}</table>")
    srm = a["srm"]
    paths = canary.get("paths", {})
    drift = "".join(f'<li><a href="{esc(os.path.relpath(p, root))}">{esc(k.replace("_", " "))}</a></li>'
                    for k, p in paths.items() if k.startswith("drift_"))
    sim = canary.get("simulation") or {}
    split = "users (stable hash)" if unit == "user" else "requests (drawn per request)"
    return (f"<h2>Canary A/B test</h2><p>Canary at {a['canary_percent']}% of {split}; "
            f"{esc(sim.get('requests', '?'))} simulated ad requests through both arms over HTTP.</p>{table}{uplift}"
            f"<p>Sample-ratio check: {unit}s {esc(srm['observed'])} vs expected "
            f"{esc({k: round(v) for k, v in srm['expected'].items()})}, "
            f"chi² = {srm['chi2']:.2f}, p = {srm['p_value']:.3g}</p>"
            + img(paths.get("uplift_png"), "uplift over time") + img(paths.get("arms_png"), "arms")
            + (f"<h3>Drift (Evidently)</h3><ul>{drift}</ul>" if drift else ""))


def write_demo_report(result: DemoResult) -> Path:
    """Render ``result`` to ``result.report`` (temp file, then rename); figures go beside it."""
    root = result.root
    figs = root / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    canary = result.canary
    action = canary.get("action", "none") if canary else "none"
    acted = canary.get("acted", "no canary ran") if canary else "no canary ran"
    reasons = "".join(f"<li>{esc(r)}</li>" for r in canary.get("reasons", [])) if canary else ""
    timing = "".join(f"<tr><td>{esc(k)}</td><td>{v:.0f} s</td></tr>" for k, v in result.seconds.items())
    art = result.artifacts
    body = [
        f'<h1>genctr demo</h1><div class="banner {esc(action)}" id="decision">Canary decision: '
        f"<b>{esc(action.upper())}</b> ({esc(acted)})</div><ul>{reasons}</ul>",
        f"<table><tr><th>stage</th><th>wall time</th></tr>{timing}"
        f"<tr><th>total</th><th>{sum(result.seconds.values()):.0f} s</th></tr></table>",
    ]
    if result.movielens:
        body.append(_gate_section("Offline quality: MovieLens (GenCTR pretraining + DCN-V2 & TA)", result.movielens,
                                  _figures(figs, "movielens", result.movielens, art.get("movielens_model")),
                                  art.get("movielens_gate_report"), root))
    cand_gate = (result.candidate or {}).get("gate")
    body.append(_gate_section("Champion gate: the candidate vs the deployed champion (synthetic world)", cand_gate,
                              _figures(figs, "candidate", cand_gate, art.get("candidate_model")),
                              art.get("candidate_gate_report"), root))
    body.append(_canary_section(canary, root))
    document = page(f"genctr demo: {action}", "".join(body))
    return write_text(result.report, document)
