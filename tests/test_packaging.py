"""The KFP layer is an installed part of the project: nothing edits the import path, and no
folder of the checkout shadows an installed package."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_of_the_project_edits_the_import_path() -> None:
    hits = subprocess.run(["git", "grep", "-n", "sys.path", "--", "src", "components", "pipelines"], cwd=ROOT,
                          capture_output=True, text=True)
    assert hits.stdout == "", f"sys.path edited in:\n{hits.stdout}"


def test_pipelines_and_components_import_from_the_installed_project(tmp_path: Path) -> None:
    code = "import components, pipelines.training_pipeline as p; print(p.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == ROOT / "pipelines" / "training_pipeline.py"


def test_import_docker_from_the_checkout_is_the_docker_sdk() -> None:
    # a top-level folder named like a package (the images' folder once was docker/) would win here
    code = "import docker; print(docker.__file__); print(callable(docker.from_env))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path, has_client = out.stdout.split()
    assert "site-packages" in path and has_client == "True"
    assert not any(p.is_dir() and p.name.isidentifier() and not (p / "__init__.py").exists() and p.name not in
                   ("src", "tests", "benchmarks", "datasets", "manifests", "feature_repo")
                   for p in ROOT.iterdir() if not p.name.startswith("."))
