"""The package's imports point one way: no module imports one that imports it back.

import-linter (`make lint`) holds the layers; this holds the weaker promise
everywhere, tests included, without a lint tool: counting every import
statement (inside functions and under TYPE_CHECKING too), the import graph of
django_tiercache has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import django_tiercache

PACKAGE = Path(django_tiercache.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["django_tiercache", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            )
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as a path that ends where it starts, or [] when there is none."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        for target in sorted(graph[node]):
            if cycle := walk(target, [*path, node]):
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        if cycle := walk(start, []):
            return cycle
    return []


def test_imports__form_no_cycle():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert "django_tiercache.storage.tier" in graph  # the walk found the package
    assert cycle_in(graph) == []


def test_cycle_in__finds_a_cycle_through_a_function_level_import(tmp_path):
    known = {"p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py"}
    known["p.a"].write_text("from . import b\n")
    known["p.b"].write_text("def late():\n    from .a import x\n")
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert cycle_in(graph) == ["p.a", "p.b", "p.a"]
