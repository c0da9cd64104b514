"""The layout rules of docs/architecture.md, checked on the source: imports point down, functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mtl3dcli"
BLOCKS = (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
MAX_LINES, MAX_NESTING = 60, 4

# (importing package, imported module prefix) pairs that would point upwards
FORBIDDEN = [("mtl3dcli/models", "mtl3dcli.engine"), ("mtl3dcli/models", "mtl3dcli.commands"),
             ("mtl3dcli/metrics", "mtl3dcli.tasks"), ("mtl3dcli/metrics", "mtl3dcli.models"),
             ("mtl3dcli/render", "mtl3dcli.models"), ("mtl3dcli/render", "mtl3dcli.engine"),
             ("mtl3dcli/engine", "mtl3dcli.commands")]


def nesting(node: ast.AST, level: int = 0) -> int:
    """Deepest block nesting inside `node`, not counting nested functions and classes (they are checked alone)."""
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, SCOPES):
            continue
        deepest = max(deepest, nesting(child, level + isinstance(child, BLOCKS)))
    return deepest


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_nesting_counts_blocks_not_nested_functions():
    tree = ast.parse("def f():\n for a in b:\n  if a:\n   def g():\n    while 1:\n     pass\n")
    assert nesting(tree.body[0]) == 2


@pytest.mark.parametrize("folder", ["mtl3dcli", "benchmarks", "tests"])
def test_functions_are_short_and_shallow(folder):
    offenders = []
    for path in sources(folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines, depth = node.end_lineno - node.lineno + 1, nesting(node)
                if lines > MAX_LINES or depth > MAX_NESTING:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines, "
                                     f"nesting {depth})")
    assert not offenders, "\n".join(offenders)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_imports_point_down():
    offenders = []
    for path in sources("mtl3dcli"):
        where = path.relative_to(ROOT).as_posix()
        for module in imported_modules(path):
            offenders += [f"{where} imports {module}" for package, prefix in FORBIDDEN
                          if where.startswith(package + "/") and (module == prefix or module.startswith(prefix + "."))]
    assert not offenders, "\n".join(offenders)
