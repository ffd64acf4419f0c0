"""The package's rooms stay small and layered: no module over 500 lines, no function over 80, no import circle.

The limits are the house's (a module is one job; a function reads in one screen). An import inside a
function counts as an arrow too; one under `if TYPE_CHECKING:` does not (it never runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rstn"
MODULE_LINES, FUNCTION_LINES = 500, 80


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def test_no_module_over_500_lines():
    long = {path.name: n for path in PACKAGE.glob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES}
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_function_over_80_lines():
    long = [f"rstn/{name}.py:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, tree in modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES]
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"


def _imports(tree: ast.Module) -> set[str]:
    """The rstn modules `tree` imports, at module level or in functions, leaving out TYPE_CHECKING blocks."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rstn":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rstn.")}
    return found


def test_no_import_circle():
    trees = modules()
    graph = {name: _imports(tree) & set(trees) - {name} for name, tree in trees.items()}
    graph["__init__"] = set()  # the package's lazy attribute access is not a layer
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", "import circle: " + " -> ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_check_sees_a_circle():
    # the circle check must be able to fail: two modules that import each other
    a = ast.parse("from rstn import b\n")
    b = ast.parse("def f():\n    from rstn.a import x\n")
    assert _imports(a) == {"b"} and _imports(b) == {"a"}
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rstn.a import x\n")
    assert _imports(guarded) == set()
