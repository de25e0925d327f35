"""The house's layering, checked on the source: every import in ``rcnn_cli`` (lazy ones inside
functions included) goes from a higher room to a lower one, and no modules import each other in a
circle. The rooms, lowest first, are the ``LAYERS`` below; docs/architecture.md draws the same map."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rcnn_cli"

# Lowest first. Rooms on one line are peers: they may not import each other.
LAYERS: list[set[str]] = [
    {"errors", "timing", "formats", "version"},
    {"files"},
    {"hardware"},
    {"ops"},
    {"model"},
    {"data"},
    {"eval"},
    {"inference"},
    {"settings"},
    {"predict", "export", "training"},
    {"benchmark"},
    {"commands"},
    {"api"},
    {"cli"},
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The rcnn_cli modules ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None     # None: the package root (__version__ only)


def test_every_import_goes_down_a_layer():
    graph = import_graph()
    unknown = {room(m) for m in graph} - set(RANK) - {None, "__main__", "conf"}
    assert not unknown, f"rooms missing from LAYERS (add them where they belong): {sorted(unknown)}"
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if room(a) and room(b) and room(a) != room(b) and RANK[room(a)] <= RANK[room(b)]]
    assert not upward, "imports that go up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = import_graph()
    circles = strongly_connected(graph)
    assert not circles, f"modules that import each other in a circle: {circles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert strongly_connected(graph) == expected
