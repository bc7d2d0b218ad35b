"""The engine's modules import each other in one direction (no cycles, lazy imports included):
a module can be read, and loaded, after the ones it uses. Type-only imports (``if TYPE_CHECKING``)
are not counted: they never run."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "beaker_mssql" / "testing" / "engine"


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                if child.module:
                    found.add(child.module.split(".")[0])
                else:
                    found.update(alias.name for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in ENGINE.glob("*.py")}
    return {name: _runtime_imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_no_import_cycles_in_the_engine() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep] if dep in stack else [name, dep])
            elif dep not in state:
                walk(dep, [*stack, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_expressions_functions_executor_order() -> None:
    graph = _graph()
    assert "functions" in graph["expressions"] and "expressions" not in graph["functions"]
    assert "expressions" in graph["executor"] and "executor" not in graph["expressions"]
