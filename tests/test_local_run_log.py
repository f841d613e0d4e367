"""kfp.local's output goes to the run's executor log file, not to stdout; a failure names the step,
the error it raised and the log. One small real run: the canary pipeline stopping at its first step
on a malformed A/B log (the same run tests/test_canary_pipeline.py makes)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from genctr.orchestration.local import PipelineRunError, last_error, run_local

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Logging as the CLI sets it up (a root handler on stderr, which kfp.local would log through);
    pytest's handlers are put back afterwards."""
    import logging

    from genctr.logging_setup import setup_logging

    monkeypatch.setenv("GENCTR_LOG_FORMAT", "")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("INFO")
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_executor_output_goes_to_the_log_file_not_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str], cli_logging: None) -> None:
    bad = tmp_path / "bad"
    (bad / "clicks").mkdir(parents=True)
    pd.DataFrame({"request_id": ["r1"], "item_id": [1]}).to_parquet(bad / "clicks" / "part-0.parquet")  # no ts
    monkeypatch.setenv("GENCTR_HOME", str(tmp_path / "home"))
    log_file = tmp_path / "logs" / "canary.log"
    capfd.readouterr()
    with pytest.raises(PipelineRunError) as err:
        run_local({"log_dir": str(bad)}, tmp_path / "runs", pipeline="canary", log_file=log_file)
    out, errs = capfd.readouterr()
    text = log_file.read_text()
    # the step's traceback, kfp.local's banners and the step's own (JSON) log lines are in the file ...
    assert "DataValidationError: clicks log lacks column(s) ['ts']" in text
    assert "collect-logs" in text and "Traceback" in text
    step_logs = [json.loads(line.strip()) for line in text.splitlines() if line.strip().startswith('{"ts"')]
    assert step_logs and all({"level", "logger", "message"} <= set(r) for r in step_logs)
    # ... and none of it on stdout (nor on stderr: kfp.local prints everything to stdout)
    for stream in (out, errs):
        assert "DataValidationError" not in stream and "Traceback" not in stream and "collect-logs" not in stream
    exc = err.value
    assert exc.failed_task == "collect-logs" and exc.log_path == str(log_file)
    # the last error the step printed: the one it raised, naming the bad file
    assert str(exc).startswith(f"pipeline step collect-logs failed: DataValidationError: {bad / 'clicks'}")
    assert "clicks log lacks column(s) ['ts']" in str(exc) and f"its log: {log_file}" in str(exc)
    assert "Skipping task analyze-canary" in text  # kfp.local's own scheduling, logged through the root logger
    for stream in (out, errs):
        assert "Skipping task" not in stream
    assert f"kfp.local output goes to {log_file}" in errs  # genctr's own line, on stderr, names the file


def test_the_default_log_file_and_the_error_line(tmp_path: Path) -> None:
    from genctr.orchestration.local import default_log_path

    first, second = default_log_path(tmp_path, "canary"), default_log_path(tmp_path, "canary")
    assert first.parent == tmp_path.resolve() / "logs" and first.name.startswith("canary-") and first.suffix == ".log"
    assert first.name <= second.name
    log = tmp_path / "x.log"
    log.write_text("    Traceback (most recent call last):\n      File x\n    KeyError: 'a'\n"
                   "noise\n    genctr.errors.ConfigError: bad value: x\n    done\n")
    assert last_error(log) == "ConfigError: bad value: x"
    assert last_error(tmp_path / "missing.log") is None
