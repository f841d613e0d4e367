"""``--log-format plain|json``: JSON lines by default off a terminal (pods, pipes), Rich on one."""
from __future__ import annotations

import ast
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from genctr.cli import app
from genctr.errors import ConfigError
from genctr.logging_setup import LOG_FORMAT_ENV, JsonFormatter, resolve_format, setup_logging

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test configures the root logger; put pytest's handlers back afterwards. The CLI exports
    an explicit --log-format to the environment: monkeypatch restores it."""
    monkeypatch.setenv(LOG_FORMAT_ENV, "")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_default_follows_the_terminal_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_format(None, io.StringIO()) == "json"  # a pipe, a pod's stderr
    assert resolve_format(None, Terminal()) == "plain"
    assert resolve_format("json", Terminal()) == "json" and resolve_format("plain", io.StringIO()) == "plain"
    monkeypatch.setenv(LOG_FORMAT_ENV, "plain")
    assert resolve_format(None, io.StringIO()) == "plain"
    assert resolve_format("json", io.StringIO()) == "json"  # the argument wins
    with pytest.raises(ConfigError, match=r"--log-format must be one of plain \| json, got 'xml'"):
        resolve_format("xml")
    monkeypatch.setenv(LOG_FORMAT_ENV, "yaml")
    with pytest.raises(ConfigError, match=r"\$GENCTR_LOG_FORMAT must be one of"):
        resolve_format(None)


def test_json_lines_carry_level_logger_message_extras_and_tracebacks() -> None:
    out = io.StringIO()
    assert setup_logging("DEBUG", "json", out) == "json"
    log = logging.getLogger("genctr.test")
    log.debug("two\nlines", extra={"run_id": "r-1", "step": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %s", "here")
    logging.getLogger("feast").info("quiet")  # noisy libraries are held at WARNING
    import warnings

    warnings.warn("a deprecated thing", DeprecationWarning, stacklevel=1)  # warnings become records too
    records = json_lines(out.getvalue())
    assert len(out.getvalue().strip().splitlines()) == len(records) == 3
    first, second, third = records
    assert first["level"] == "DEBUG" and first["logger"] == "genctr.test" and first["message"] == "two\nlines"
    assert first["run_id"] == "r-1" and first["step"] == 3 and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and second["message"] == "failed here"
    assert "ValueError: boom" in second["exc"] and "Traceback" in second["exc"]
    assert third["logger"] == "py.warnings" and "a deprecated thing" in third["message"]


def test_plain_is_rich_on_a_terminal_and_text_lines_elsewhere() -> None:
    from rich.logging import RichHandler

    setup_logging("INFO", "plain", Terminal())
    assert isinstance(logging.getLogger().handlers[0], RichHandler)
    out = io.StringIO()
    setup_logging("INFO", "plain", out)
    logging.getLogger("genctr.x").warning("hello")
    line = out.getvalue().strip()
    assert line.endswith("WARNING genctr.x: hello") and not line.startswith("{")
    with pytest.raises(ConfigError, match="--log-level must be one of"):
        setup_logging("LOUD", "plain", out)


def test_the_cli_option_and_its_default(tmp_path: Path) -> None:
    runner = CliRunner()
    # CliRunner's stderr is not a terminal: JSON lines without being asked
    result = runner.invoke(app, ["pipeline", "compile", "--out", str(tmp_path / "a.yaml")])
    assert result.exit_code == 0, result.output
    records = json_lines(result.stderr)
    assert any(r["logger"] == "genctr.orchestration.catalog" and "compiled the training pipeline" in r["message"]
               for r in records), result.stderr
    assert result.stdout.strip() == str(tmp_path / "a.yaml")  # results stay on stdout
    result = runner.invoke(app, ["--log-format", "plain", "pipeline", "compile", "--out", str(tmp_path / "b.yaml")])
    assert result.exit_code == 0 and "INFO genctr.orchestration.catalog: compiled" in result.stderr
    assert not result.stderr.lstrip().startswith("{")
    import os

    assert os.environ[LOG_FORMAT_ENV] == "plain"  # what kfp.local steps (subprocesses) read
    result = runner.invoke(app, ["--log-format", "xml", "pipeline", "params"])
    assert result.exit_code == 2 and "--log-format must be one of plain | json" in result.stderr


def test_components_log_json_lines_on_a_pipe() -> None:
    """Every component body calls setup_logging() without a format, so in a pod (stderr a pipe) it logs
    JSON lines: shown on a real subprocess with its stderr piped."""
    for path in sorted((ROOT / "components").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup_logging":
                assert not node.args and not node.keywords, f"{path.name}: setup_logging() must take the default"
    code = ("from genctr.logging_setup import setup_logging; import logging; setup_logging(); "
            "logging.getLogger('genctr.step').info('step %s done', 'ingest')")
    env = {k: v for k, v in __import__("os").environ.items() if k != LOG_FORMAT_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    (record,) = json_lines(done.stderr)
    assert record["message"] == "step ingest done" and record["logger"] == "genctr.step"


def test_a_record_with_an_unserialisable_extra_still_prints() -> None:
    record = logging.LogRecord("genctr.x", logging.INFO, __file__, 1, "m", None, None)
    record.path = Path("/p")
    assert json.loads(JsonFormatter().format(record))["path"] == "/p"
