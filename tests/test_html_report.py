"""genctr.html_report: the one page kit behind the gate, GX, canary and demo pages."""
from __future__ import annotations

from pathlib import Path

from genctr.html_report import CSS, esc, img, page


def test_page_is_self_contained_and_escapes_its_title(tmp_path: Path) -> None:
    png = tmp_path / "roc.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    doc = page("<b>gate</b> & co", f"<h1>x</h1>{img(png, 'ROC')}{img(tmp_path / 'missing.png')}")
    assert doc.startswith("<!doctype html>") and doc.rstrip().endswith("</body></html>")
    assert "<title>&lt;b&gt;gate&lt;/b&gt; &amp; co</title>" in doc and f"<style>{CSS}</style>" in doc
    assert doc.count("data:image/png;base64,") == 1 and 'alt="ROC"' in doc  # the missing image is left out
    assert esc("\"'<>") == "&quot;&#x27;&lt;&gt;"


def test_every_report_writer_uses_the_kit() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "genctr"
    writers = ["evaluation/report.py", "monitoring/report.py", "features/expectations_report.py", "demo_report.py"]
    for rel in writers:
        text = (src / rel).read_text()
        assert "from genctr.html_report import" in text and "<style" not in text and "base64" not in text, rel
