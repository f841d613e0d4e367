"""genctr.atomic: outputs appear whole or not at all, and concurrent writers never collide."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from genctr import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "decision.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic.write_json(target, {"v": object()})  # serialising fails before anything is touched
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["decision.json"]


def test_concurrent_writers_use_distinct_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    names = {atomic.temp_path(target).name for _ in range(1000)}
    assert len(names) == 1000 and all(n.startswith(".report.html.") for n in names)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(50):
                atomic.write_text(target, f"writer {i} " * 1000)
        except BaseException as exc:  # broad on purpose: collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = target.read_text()
    assert len(set(text.split(" ")) - {""}) == 2  # one writer's whole text: "writer" and its number
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_publish_replaces_a_directory_in_one_step(tmp_path: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new = tmp_path / "build.new"
    new.mkdir()
    (new / "new.txt").write_text("new")
    atomic.publish(new, out)
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
