"""``benchmarks/machine_speed.py``: the reference workload recorded beside wall-clock figures."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "machine_speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("machine_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_measures_every_probe_and_writes_the_json(speed, tmp_path: Path, capsys) -> None:
    out = tmp_path / "speed.json"
    assert speed.main(["--repeats", "1", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == printed
    for probe in ("python_loop_s", "import_torch_s", "matmul_s", "jvm_start_s"):  # java: the suite needs it
        assert 0 < printed[probe] < 120, probe
    assert printed["cpus"] >= 1 and len(printed["load_before"]) == 3


def test_a_bad_repeat_count_is_refused(speed, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        speed.main(["--repeats", "0"])
    assert exit_.value.code == 2 and "--repeats must be at least 1" in capsys.readouterr().err
