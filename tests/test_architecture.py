"""The shape of the package: imports flow one way (no cycle, counting imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xoceandiff"


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its body (``from . import x`` included)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:  # from .x import y
                    edges.add(node.module.split(".")[0])
                else:  # from . import x, y
                    edges.update(alias.name if alias.name in modules else "__init__" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xoceandiff"):
                parts = node.module.split(".")
                edges.add(parts[1] if len(parts) > 1 else "__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("xoceandiff"):
                        parts = alias.name.split(".")
                        edges.add(parts[1] if len(parts) > 1 else "__init__")
        graph[path.stem] = {edge for edge in edges if edge in modules and edge != path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_package_modules():
    graph = import_graph()
    assert {"sampling", "parallel", "card", "checkpoint", "canonical"} <= set(graph)
    assert find_cycle(graph) is None, find_cycle(graph)


def test_sampling_flows_one_way_and_leaves_stay_leaves():
    graph = import_graph()
    assert "sampling" in graph["parallel"] and "parallel" not in graph["sampling"]
    assert graph["canonical"] <= {"conventions", "errors", "eos"}
    assert graph["eos"] <= {"errors"}
    assert graph["atomic"] <= {"errors"}
    assert "model" not in graph["checkpoint"]  # the disk format knows no Denoiser
