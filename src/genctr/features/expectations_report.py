"""Readable reports of a Great Expectations run: outcomes, Markdown and HTML, written atomically."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genctr.atomic import write_text
from genctr.html_report import esc, page

_SAMPLE = 5  # unexpected values shown per expectation


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result in plain Python values."""

    name: str  # stable id used in reports and errors, e.g. "label_in_0_1"
    description: str  # what the expectation asserts, in words
    expectation: str  # GX type, e.g. "expect_column_values_to_be_in_set"
    column: str | None
    success: bool
    observed: str  # readable observed value, unexpected examples or the error
    details: dict[str, Any] = field(default_factory=dict)


def outcome_from_gx(name: str, description: str, r: Any, columns: set[str]) -> ExpectationOutcome:
    """Convert a GX ``ExpectationValidationResult`` into an outcome; ``columns``: the table's."""
    cfg = r.expectation_config
    kwargs = dict(cfg.kwargs)
    column = kwargs.get("column") or ", ".join(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs) or None
    details = {k: _plain(v) for k, v in dict(r.result or {}).items()
               if k in ("observed_value", "element_count", "unexpected_count", "unexpected_percent",
                        "partial_unexpected_list", "missing_count", "partial_missing_list")}
    error = _exception_message(r.exception_info)
    absent = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs and kwargs[k] not in columns]
    if absent and not r.success:  # GX's own error here is a stack-trace message; say it plainly
        error = f"column {', '.join(absent)} not found"
    if error:
        details["error"] = error
    return ExpectationOutcome(name=name, description=description, expectation=cfg.type, column=column,
                              success=bool(r.success), observed=_observed(dict(r.result or {}), error, bool(r.success)),
                              details=details)


def _exception_message(info: Any) -> str | None:
    """GX nests exception info by metric id when a metric failed; return the first message."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return None


def _observed(res: dict[str, Any], error: str | None, success: bool) -> str:
    if error:
        return error if error.endswith("not found") else f"error: {error}"
    if "unexpected_count" in res:
        n, bad = res.get("element_count", 0), res["unexpected_count"]
        text = f"{bad} of {n} rows unexpected"
        if bad:
            text += f", e.g. {_plain(res.get('partial_unexpected_list', [])[:_SAMPLE])}"
        return text
    if res.get("partial_missing_list"):
        return f"missing {_plain(res['partial_missing_list'])}"
    if "observed_value" in res:
        v = _plain(res["observed_value"])
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    return "ok" if success else str(_plain(res))


def _plain(v: Any) -> Any:
    """numpy scalars, tuples and nested lists as plain Python values."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, (str, bytes)) else v


def write_reports(report_dir: Path, suite: str, success: bool, outcomes: list[ExpectationOutcome],
                  context: dict[str, Any], data_docs: Path | None = None) -> tuple[Path, Path]:
    """Write ``<suite>_validation.md`` and ``.html`` under ``report_dir``; failures listed first.

    Both link to the Great Expectations Data Docs site ``data_docs`` (its index.html) when given.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(outcomes, key=lambda o: o.success)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    md = report_dir / f"{suite}_validation.md"
    page = report_dir / f"{suite}_validation.html"
    docs = None if data_docs is None else os.path.relpath(data_docs, report_dir)  # works wherever the dir is moved
    write_text(md, _markdown(suite, success, ordered, context, stamp, docs))
    write_text(page, _html(suite, success, ordered, context, stamp, docs))
    return md, page


def _headline(suite: str, success: bool, outcomes: list[ExpectationOutcome]) -> str:
    failed = sum(not o.success for o in outcomes)
    verdict = "PASSED" if success else f"FAILED ({failed} of {len(outcomes)} expectations failed)"
    return f"Data validation: {suite} suite — {verdict}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(suite: str, success: bool, outcomes: list[ExpectationOutcome], context: dict[str, Any],
              stamp: str, docs: str | None) -> str:
    lines = [f"# {_headline(suite, success, outcomes)}", "", f"Run at {stamp}.", ""]
    if docs:
        lines += [f"Great Expectations Data Docs: [{docs}]({docs})", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in context.items()]
    failures = [o for o in outcomes if not o.success]
    if failures:
        lines += ["", "## Failing expectations", ""]
        lines += [f"- **{o.name}** — {o.description}; observed: {_md_cell(o.observed)}" for o in failures]
    lines += ["", "## All expectations", "", "| status | name | expectation | column | observed |",
              "|---|---|---|---|---|"]
    lines += [f"| {'pass' if o.success else '**FAIL**'} | {o.name} | {o.expectation} | {_md_cell(o.column or '')} "
              f"| {_md_cell(o.observed)} |" for o in outcomes]
    return "\n".join(lines) + "\n"


def _html(suite: str, success: bool, outcomes: list[ExpectationOutcome], context: dict[str, Any],
          stamp: str, docs: str | None) -> str:
    e = esc
    rows = "\n".join(
        f"<tr class='{'pass' if o.success else 'fail'}'><td>{'pass' if o.success else 'FAIL'}</td>"
        f"<td>{e(o.name)}</td><td>{e(o.description)}</td><td><code>{e(o.expectation)}</code></td>"
        f"<td>{e(o.column or '')}</td><td>{e(o.observed)}</td></tr>" for o in outcomes)
    ctx = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in context.items())
    headline = _headline(suite, success, outcomes)
    table = ("<table class='bordered'><tr><th>status</th><th>name</th><th>asserts</th><th>expectation</th>"
             f"<th>column</th><th>observed</th></tr>\n{rows}\n</table>")
    link = f"<p>Great Expectations Data Docs: <a href='{e(docs)}'>{e(docs)}</a></p>" if docs else ""
    return page(headline, f"<h1>{e(headline)}</h1><p>Run at {e(stamp)}.</p>{link}<ul>{ctx}</ul>\n{table}")
