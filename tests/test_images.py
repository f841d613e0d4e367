"""The container images' recipes: dependency layer before the source, constraints from the tested
environment, a non-root user, and ``make images`` / ``make constraints``. No Docker engine here: the
Dockerfiles are parsed, not built."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "container-images"
CONSTRAINTS = IMAGES / "constraints.txt"
DOCKERFILES = [IMAGES / "Dockerfile", IMAGES / "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        pending += " " + line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, args = pending.strip().partition(" ")
        out.append((word.upper(), " ".join(args.split())))
        pending = ""
    return out


def first(steps: list[tuple[str, str]], pred: object) -> int:
    # the ignore below: pred is any callable the caller passes
    hits = [i for i, step in enumerate(steps) if pred(step)]  # type: ignore[operator]
    assert hits, "no such instruction"
    return hits[0]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_are_a_layer_before_the_source(path: Path) -> None:
    steps = instructions(path)
    deps_copy = first(steps, lambda s: s[0] == "COPY" and "constraints.txt" in s[1])
    deps_install = first(steps, lambda s: s[0] == "RUN" and "pip install -r" in s[1])
    src_copy = first(steps, lambda s: s[0] == "COPY" and s[1].split()[0] == "src")
    project = first(steps, lambda s: s[0] == "RUN" and "pip install --no-deps" in s[1])
    assert deps_copy < deps_install < src_copy < project, steps
    # the dependency layer sees only pyproject.toml and the constraints: no source invalidates it
    for op, args in steps[:deps_install]:
        if op == "COPY":
            assert set(args.split()[:-1]) <= {"pyproject.toml", "container-images/constraints.txt"}, args
    install = steps[deps_install][1]
    assert re.search(r"-c \S*constraints\.txt", install), install
    torch = first(steps, lambda s: s[0] == "RUN" and "torch" in s[1] and "pip install" in s[1])
    assert torch <= deps_install and "constraints.txt" in steps[torch][1]  # the torch pin comes from the file
    assert "pip install -e" not in " ".join(a for _, a in steps[:src_copy])  # no install of the project before


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_as_a_numeric_non_root_user(path: Path) -> None:
    steps = instructions(path)
    users = [args for op, args in steps if op == "USER"]
    assert users, "no USER: the image would run as root"
    final = users[-1].split(":")[0]
    assert final.isdigit() and int(final) != 0, users[-1]  # numeric: runAsNonRoot can verify it
    created = first(steps, lambda s: s[0] == "RUN" and f"--uid {final}" in s[1])
    assert "/gcs" in steps[created][1] and "/minio" in steps[created][1]  # KFP's launcher writes there
    assert steps[-1][0] == "USER"  # nothing after it runs as root


def test_constraints_pin_what_the_tests_run_with() -> None:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = ver
    for package in ("torch", "kfp", "kserve", "feast"):
        installed = version(package).split("+")[0]  # torch 2.13.0+cpu is pinned as 2.13.0 (the CUDA image too)
        assert pins.get(package) == installed, (package, pins.get(package), installed)
    assert "genctr" not in pins  # the project itself is installed from the source, --no-deps


def test_the_constraints_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("freeze_constraints", IMAGES / "freeze_constraints.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    freeze = ["torch==2.13.0+cpu", "Feast==0.67.0", "-e git+https://x@abc#egg=genctr", "genctr==0.1.0",
              "pkg @ file:///tmp/pkg", "", "kfp==2.17.3"]
    assert module.constraints(freeze) == ["Feast==0.67.0", "kfp==2.17.3", "torch==2.13.0"]
    with pytest.raises(ValueError, match="not name==version"):
        module.constraints(["weird>=1"])


def test_make_images_says_what_is_missing() -> None:
    make = shutil.which("make")
    assert make, "make is needed for the Makefile targets"
    for docker, needle in (("no-such-docker-cli", "no 'no-such-docker-cli' command"),
                           ("false", "'false' cannot reach a container engine")):  # a CLI without an engine
        done = subprocess.run([make, "-s", "-C", str(ROOT), "images", f"DOCKER={docker}"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and f"make images: {needle}" in done.stderr, done.stderr
    dry = subprocess.run([make, "-n", "-C", str(ROOT), "images", "DOCKER=docker"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "-f container-images/Dockerfile -t ghcr.io/genctr/genctr:" in dry
    assert "-f container-images/Dockerfile.cuda -t ghcr.io/genctr/genctr:" in dry and "-cuda ." in dry
    dry = subprocess.run([make, "-n", "-C", str(ROOT), "constraints"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "container-images/freeze_constraints.py container-images/constraints.txt" in dry
