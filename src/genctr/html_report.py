"""The one kit behind every HTML page the project writes (the gate, the GX suites, the canary
analysis, the demo): a self-contained page (one stylesheet, images inlined as PNG data URIs,
so a KFP HTML artifact or a mailed file shows everything) and the escaping every value needs."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#1f1f1f}
td,th{padding:4px 10px;text-align:right;vertical-align:top}th:first-child,td:first-child{text-align:left}
table{border-collapse:collapse;margin:0.5em 0}tr:nth-child(even){background:#f3f3f3}
table.bordered td,table.bordered th{border:1px solid #ccc;text-align:left}
tr.fail{background:#fde2e2}tr.pass{background:#e6f4ea}
.banner{padding:1em;border-radius:6px;color:white;font-size:1.3em}
.promote,.passed{background:#137333}.rollback,.rejected{background:#b3261e}.continue{background:#8a6d00}
.none{background:#555}
img{max-width:640px;margin:4px}code{background:#eee;padding:0 3px}"""


def esc(value: Any) -> str:
    """Any value as HTML text (quotes escaped too: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def img(path: str | Path | None, alt: str = "") -> str:
    """An ``<img>`` with the PNG at ``path`` inlined; ``""`` when there is no such file."""
    if not path or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{esc(alt or Path(path).stem)}" src="data:image/png;base64,{data}">'


def page(title: str, body: str) -> str:
    """A whole HTML document: ``title`` (plain text, escaped here) and ``body`` (HTML)."""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>{body}</body></html>\n")
