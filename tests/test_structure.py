"""The package's shape, read from the source (ast, nothing imported): imports point down (benchmark -> tasks ->
model_zoo), no module import circle, tasks reach the runner only through the interface they declare, and modules
stay small.

Every import counts, function-local and typing-only ones too; relative imports are resolved. A `from X import Y`
is an edge to the module X.Y when Y is a module, else to X. A package's implicit import by its submodules is not an
edge (it would make every package that imports one of its own submodules a circle)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

FOLDERS = {"benchmark": "lowshot.benchmark", "tasks": "lowshot.tasks", "model_zoo": "lowshot.model_zoo",
           "lowshot": "lowshot"}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the package, under the name it is installed as."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of the package that module `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import lowshot.tasks.x.y as z` names a module or an attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _offenders(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith(layer + ".") or m == layer
                  for t in targets if t.startswith(forbidden))


def test_the_modules_are_found_and_relative_imports_resolved():
    assert {"lowshot.benchmark.runner", "lowshot.benchmark.planning", "lowshot.tasks.base",
            "lowshot.tasks.classifiers.registry", "lowshot.model_zoo.loading"} <= set(MODULES)
    # tasks/base.py: `from .classifiers import ...` and `from lowshot.model_zoo.files import ...`
    assert {"lowshot.tasks.classifiers", "lowshot.model_zoo.files"} <= GRAPH["lowshot.tasks.base"]
    # benchmark/bench_command.py imports `from . import distributed` inside a function
    assert "lowshot.benchmark.distributed" in GRAPH["lowshot.benchmark.bench_command"]


def test_imports_point_down():
    """benchmark -> tasks -> model_zoo: tasks never import the runner's layer, model_zoo neither of the others."""
    assert _offenders("lowshot.tasks", ("lowshot.benchmark",)) == []
    assert _offenders("lowshot.model_zoo", ("lowshot.tasks", "lowshot.benchmark")) == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None (iterative depth-first search)."""
    state = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_circle():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_tasks_declare_the_interface_the_runner_implements():
    """tasks/services.py declares the runner's services as a typing.Protocol (tasks never import benchmark: above)."""
    path = ROOT / "tasks" / "services.py"
    tree = ast.parse(path.read_text())
    protocols = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)
                 and any(ast.unparse(b) in ("Protocol", "typing.Protocol") for b in n.bases)}
    assert "RunServices" in protocols
    from lowshot.benchmark.runner import RunContext
    from lowshot.tasks.services import RunServices

    assert isinstance(RunContext(ROOT / "unused"), RunServices)  # the runner implements every declared service
    # every service a task hook uses (`ctx.<member>`) is declared there
    declared = {n.name if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) else ast.unparse(n.target)
                for n in protocols["RunServices"].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                           ast.AnnAssign))}
    used = {f"{m}: ctx.{node.attr}" for m, p in MODULES.items() if m.startswith("lowshot.tasks.")
            for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "ctx" and node.attr not in declared}
    assert used == set(), "services used but not declared in RunServices"


def _sizes() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}


def test_modules_stay_small():
    over = {name: n for name, n in _sizes().items() if n > MAX_LINES}
    assert over == {}, f"modules over {MAX_LINES} lines: {over}"
