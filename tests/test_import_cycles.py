"""No import cycle between the library's packages (``genctr.<package or module>``), counting every
import a module makes, lazy ones inside functions included; only ``if TYPE_CHECKING:`` imports
(never executed) are left out."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIB = SRC / "genctr"


def _unit(module: str) -> str | None:
    """``genctr.serving.server`` -> ``serving``; None for the package itself or a name outside it."""
    parts = module.split(".")
    if parts[0] != "genctr" or len(parts) < 2:
        return None
    return parts[1] if (LIB / parts[1]).is_dir() or (LIB / f"{parts[1]}.py").is_file() else None


def _runtime_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(imported module, line) for every import outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        source = _unit(".".join(rel.parts))
        if source is None:
            continue
        for module, line in _runtime_imports(ast.parse(path.read_text())):
            target = _unit(module)
            if target is not None and target != source:
                edges[source].add(target)
                where[(source, target)].append(f"{path.relative_to(SRC.parent)}:{line}")
    return edges, where


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_the_library_packages() -> None:
    edges, where = import_graph()
    assert {"serving", "training", "models"} <= set(edges)  # the walk saw the library
    found = cycles(edges)
    detail = [f"{a} -> {b}: {where[(a, b)][:3]}" for c in found for a in c for b in c if (a, b) in where]
    assert not found, "import cycles between packages:\n" + "\n".join(detail)
