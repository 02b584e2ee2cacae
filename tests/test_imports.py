"""Imports flow one way: no cycle among llamachat's modules (and the built-in plugins'), counting
every import statement wherever it stands (a function-level import closes a cycle as surely as a
top-level one, only later) and `from . import x` as an import of the module x. ruff has no rule for
cycles, so this test reads the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "llamachat", *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file())]


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            found[module_name(path, package.parent)] = path
    return found


def imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules of `modules` that one import statement in module `here` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if node.level:  # relative: from the package `here` is in (or is), `level - 1` packages up
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" for alias in node.names]
    submodules = [name for name in names if name in modules]  # `from . import x`: the module x
    if len(submodules) == len(names):
        return submodules
    return submodules + ([target] if target in modules else [])  # `from m import name`: the module m


def import_graph() -> dict[str, set[str]]:
    modules = find_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= {m for m in imported(node, name, is_package, modules) if m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_through(graph, group) for group in groups]


def cycle_through(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One closed path a -> ... -> a inside a strongly connected group, for the failure message."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, so the path named is a shortest one back to `start`
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return group


def test_the_graph_sees_function_level_and_package_relative_imports():
    graph = import_graph()
    assert "llamachat.memory" in graph and "llamachat.protocols" in graph["llamachat.backends"]
    assert "llamachat.checkpoints.gguf" in graph["llamachat.checkpoints"]  # imported inside a function
    assert "llamachat.hookspecs" in graph["llamachat.plugins"]  # `from . import hookspecs`


def test_cycles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)
