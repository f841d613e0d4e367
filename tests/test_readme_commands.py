"""Every command README.md shows is run here, so the README cannot drift from the CLI.

Each ``genctr ...`` line of a fenced ``bash`` block is parsed by the real command line (an unknown
flag, a missing value or a bad number fails it), and then, by :data:`HOW`:

* ``run``: invoked for real, in a scratch directory, with tiny inputs where :data:`TINY` says so;
* ``cluster``: invoked for real against the recording stand-in of ``kfp.Client`` (there is no
  Kubeflow Pipelines API server here); the package it is given is compiled for real;
* ``parse``: parsed only, too slow to run here. Kept short; each says which test runs the command.

``[...]`` marks optional flags: the line is checked without and with them. ``make X`` lines must
name a Makefile target. A README command whose path is not in :data:`HOW` fails the test.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from genctr.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

HOW: dict[str, str] = {
    "--version": "run",
    "data export": "run",
    "pipeline compile": "run",
    "pipeline params": "run",
    "canary status": "run",
    "pipeline submit": "cluster",
    "pipeline schedule": "cluster",
    # parse only: Spark, training, servers or whole pipelines, each run for real by its own tests
    "demo": "parse",  # test_demo.py runs a small demo
    "serve": "parse",  # test_cli_serve.py serves the registry's champion
    "serve router": "parse",  # the router's own tests
    "canary simulate": "parse",  # test_canary_pipeline.py simulates through a real server
    "canary step": "parse",  # test_canary_pipeline.py / test_canary_loop.py
    "features build": "parse",  # test_spark_build.py (Spark over MovieLens: about a minute here)
    "features validate": "parse",  # test_expectations.py
    "features materialize": "parse",  # test_feast.py
    "train pretrain": "parse",  # test_training.py, test_dgenctr.py
    "train finetune": "parse",  # test_training.py, test_transfer.py
    "evaluate": "parse",  # test_cli_options.py runs `genctr evaluate` on a real build (exit 0 / 3)
    "pipeline run": "parse",  # test_pipeline_local.py, test_canary_pipeline.py (kfp.local)
    "doctor": "parse",  # test_doctor.py runs it for real (a Spark session)
    "canary sink": "parse",  # test_sink.py serves it (a subprocess, killed and restarted)
    "canary clicks import": "parse",  # test_sink.py imports clicks files
}
TINY = {"--events": "2000"}  # `data export --source synthetic --events 1000000`: the same command, smaller


def fenced_shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every ```bash / ```sh / ```shell block; continuations joined."""
    out: list[tuple[int, str]] = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            inside = not inside and fence[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not inside:
            continue
        if not pending:
            start = number
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            out.append((start, pending.strip()))
        pending = ""
    return out


def variants(tokens: list[str]) -> Iterator[list[str]]:
    """The command without its ``[optional]`` groups, then with each group (brackets removed)."""
    groups: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if tokens[i].startswith("["):
            j = i
            while not tokens[j].endswith("]"):
                j += 1
            groups.append((i, j))
            i = j + 1
        else:
            i += 1
    plain = [t for k, t in enumerate(tokens) if not any(a <= k <= b for a, b in groups)]
    yield plain
    for a, b in groups:
        inner = " ".join(tokens[a:b + 1])[1:-1].split()
        yield [*[t for k, t in enumerate(tokens[:a]) if not any(x <= k <= y for x, y in groups)], *inner,
               *[t for k, t in enumerate(tokens[b + 1:], b + 1) if not any(x <= k <= y for x, y in groups)]]


def readme_commands(text: str) -> list[tuple[int, list[str]]]:
    """(README line, argv after ``genctr``) per command variant; ``make`` lines as ``["make", target]``."""
    found = []
    for number, line in fenced_shell_lines(text):
        tokens = shlex.split(line, comments=True)
        if not tokens or tokens[0] not in ("genctr", "make"):
            continue
        for argv in variants(tokens):
            found.append((number, argv if argv[0] == "make" else argv[1:]))
    return found


class ReadmeDrift(AssertionError):
    """The CLI refuses a README command: an unknown command or flag, a missing or bad value."""


def resolve(argv: list[str]) -> tuple[str, Any]:
    """Parse ``argv`` with the real CLI, group by group, without running anything: the command path and
    its parsed context. Raises :class:`ReadmeDrift` with the CLI's own message when it refuses.

    Groups parse their own options and leave everything after the subcommand's name untouched
    (``ctx.args``), so the name is the token just before that tail."""
    root = typer.main.get_command(app)
    if argv[:1] == ["--version"]:
        return "--version", None
    path: list[str] = []
    cmd, tokens = root, list(argv)
    try:
        ctx = root.make_context("genctr", list(tokens))
        while hasattr(cmd, "list_commands"):  # a group
            rest = list(ctx.args)
            name = tokens[len(tokens) - len(rest) - 1] if len(tokens) > len(rest) else ""
            sub = cmd.get_command(ctx, name) if name else None
            if sub is None and not rest and getattr(cmd, "invoke_without_command", False):
                break  # a group that is a command itself (`genctr serve --registry R`): its options parsed
            if sub is None:
                raise ReadmeDrift(f"No such command {name!r} in `genctr {' '.join(path)}`" if name else
                                  f"no command after `genctr {' '.join(path)}`")
            path.append(name)
            cmd, tokens = sub, rest
            ctx = cmd.make_context(name, list(rest), parent=ctx)
    except ReadmeDrift:
        raise
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # click's UsageError / BadParameter (vendored by typer)
            raise
        raise ReadmeDrift(exc.format_message()) from None
    return " ".join(path), ctx


# ------------------------------------------------------------------------------------ the checks
class RecordingClient:
    """Stands in for kfp.Client: records its keyword arguments and each call."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.calls.append(("init", kwargs))

    def create_run_from_pipeline_package(self, pipeline_file: str, **kw: Any) -> Any:
        spec = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
        self.calls.append(("run", {**kw, "_pipeline": spec["pipelineInfo"]["name"]}))
        return type("Run", (), {"run_id": "run-1"})()

    def create_experiment(self, name: str, **kw: Any) -> Any:
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kw: Any) -> Any:
        spec = next(yaml.safe_load_all(Path(kw["pipeline_package_path"]).read_text()))
        self.calls.append(("recurring", {**kw, "_pipeline": spec["pipelineInfo"]["name"]}))
        return type("Job", (), {"recurring_run_id": "job-1"})()


def tiny(argv: list[str]) -> list[str]:
    return [TINY.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]


def check_after(path: str, argv: list[str], work: Path, stdout: str) -> None:
    """What a real run of the README command must have produced."""
    if path == "canary status":
        assert "/models/b" in stdout and "/models/a" in stdout, stdout  # the deployment written below
    elif path == "pipeline compile":
        out = work / argv[argv.index("--out") + 1]
        assert next(yaml.safe_load_all(out.read_text()))["pipelineInfo"]["name"].startswith("genctr-")
    elif path == "data export":
        out = work / argv[argv.index("--out") + 1]
        assert out.exists(), out
    elif path == "pipeline submit":
        kind, call = RecordingClient.calls[-1]
        assert kind == "run" and call["_pipeline"].startswith("genctr-"), RecordingClient.calls
    elif path == "pipeline schedule":
        kind, call = RecordingClient.calls[-1]
        assert kind == "recurring" and call["job_name"] and len(call["cron_expression"].split()) == 6


def write_local_deployment(home: Path) -> None:
    """A local deployment's state file without a server: what `genctr canary status` reads."""
    import json

    state = home / "deploy"
    state.mkdir(parents=True, exist_ok=True)
    (state / "genctr-ctr.json").write_text(json.dumps({"name": "genctr-ctr", "champion": "/models/a",
                                                       "canary": "/models/b", "canary_percent": 10}))


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_and_each_is_classified() -> None:
    paths = set()
    for _, argv in COMMANDS:
        if argv[0] != "make":
            try:
                paths.add(resolve(argv)[0])
            except ReadmeDrift:
                continue  # test_the_readme_command_works_as_written names it
    assert {"pipeline compile", "pipeline submit", "pipeline schedule", "data export", "evaluate"} <= paths
    unclassified = sorted(paths - set(HOW))
    assert not unclassified, f"README commands {unclassified}: say in HOW how tests/test_readme_commands.py runs them"


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[f"L{n}:{' '.join(a)[:60]}" for n, a in COMMANDS])
def test_the_readme_command_works_as_written(line: int, argv: list[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if argv[0] == "make":
        targets = re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M)
        assert argv[1] in targets, f"README line {line}: `make {argv[1]}` is not a Makefile target"
        return
    try:
        path, _ = resolve(argv)
    except ReadmeDrift as exc:
        pytest.fail(f"README line {line}: `genctr {' '.join(argv)}`: {exc}")
    how = HOW.get(path, "unclassified")
    assert how != "unclassified", f"README line {line}: classify `genctr {path}` in HOW"
    if how == "parse":
        return
    import kfp

    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").symlink_to(ROOT / "manifests")  # README paths are relative to the checkout
    monkeypatch.setenv("GENCTR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENCTR_LOG_FORMAT", "")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(kfp, "Client", RecordingClient)
    RecordingClient.calls = []
    write_local_deployment(tmp_path / "home")
    run = tiny(argv)
    result = CliRunner().invoke(app, run)
    assert result.exit_code == 0, f"README line {line}: `genctr {' '.join(run)}` exited {result.exit_code}:\n" \
                                  f"{result.output[-3000:]}"
    check_after(path, run, tmp_path, result.stdout)


def test_a_flag_the_cli_does_not_have_fails_the_check() -> None:
    text = "```bash\ngenctr pipeline compile --out x.yaml --no-such-flag   # drifted\n```\n"
    ((_, argv),) = readme_commands(text)
    with pytest.raises(ReadmeDrift, match="No such option: --no-such-flag"):
        resolve(argv)
    with pytest.raises(ReadmeDrift, match="requires an argument"):
        resolve(["canary", "simulate", "--n-requests"])
    with pytest.raises(ReadmeDrift, match="valid integer"):
        resolve(["canary", "simulate", "--n-requests", "x"])
    with pytest.raises(ReadmeDrift, match="No such command 'pipline'"):
        resolve(["pipline", "compile"])
    with pytest.raises(ReadmeDrift, match="No such option: --log-formt"):
        resolve(["--log-formt", "json", "pipeline", "params"])
    assert resolve(["--log-format", "json", "pipeline", "params", "--pipeline", "canary"])[0] == "pipeline params"


def test_continuations_comments_and_optional_groups_are_read_like_a_shell() -> None:
    text = ("Prose `genctr nothing`.\n```bash\ngenctr features materialize --build b "
            "[--online redis --redis-url localhost:6379]   # note\n"
            "genctr train finetune --build b \\\n    --model backbone=dnn\n```\n"
            "```\ngenctr not-shell\n```\n")
    assert readme_commands(text) == [
        (3, ["features", "materialize", "--build", "b"]),
        (3, ["features", "materialize", "--build", "b", "--online", "redis", "--redis-url", "localhost:6379"]),
        (4, ["train", "finetune", "--build", "b", "--model", "backbone=dnn"])]
