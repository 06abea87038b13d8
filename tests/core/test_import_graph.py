"""No import cycle inside the package: every import counts, also one under ``TYPE_CHECKING``, inside a function or
at the end of a module, so that each module can be read (and loaded) after the modules it names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import otel_resilience

PACKAGE = Path(otel_resilience.__file__).parent


def _module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports (``from a import b`` names the module
    ``a.b`` when there is one, else ``a``)."""
    name = package.name
    paths = {_module_name(package, path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name.startswith(name))
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node)
                if not source.startswith(name):
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    edges.add(submodule if submodule in paths else source)
        edges.discard(module)
        graph[module] = {edge for edge in edges if edge in paths}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "otel_resilience.core.telemetry" in graph and len(graph) > 30  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "closing",
    [
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",
        "def f():\n    from pkg import a\n",
        "X = 1\nfrom .a import A  # noqa: E402\n",
    ],
    ids=["type-checking", "in-a-function", "at-the-end"],
)
def test_the_walk_finds_a_cycle_however_it_is_closed(tmp_path: Path, closing: str) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\nA = 1\n")
    (package / "b.py").write_text("B = 2\n" + closing)
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text("B = 2\n")
    assert find_cycle(import_graph(package)) is None
