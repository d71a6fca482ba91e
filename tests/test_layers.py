"""The layers of geoseg, bottom first, and the rules the imports between them keep.

A module may import its own layer and the layers below it, never one above, and no set of
modules imports itself round a loop, not even through an import inside a function (which
only hides a cycle until someone calls it) or under ``if TYPE_CHECKING:`` (a lower layer
that names a higher one's types still depends on it). This table is the one place the
layers are listed; docs/architecture.md describes them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geoseg"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("errors", "config", "_lazy", "logs", "core")),
    ("geometry", ("tiling", "budgets", "metrics")),
    ("data", ("io", "synth")),
    ("segmenters", ("models", "methods", "ensembles", "instances")),
    ("execution", ("parallel",)),
    ("applications", ("jobs", "training", "report")),
    ("entry", ("cli", "demo", "__init__")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    """The layer index of ``geoseg.X...`` (``geoseg`` itself is the package's entry)."""
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module} is in no layer: add geoseg/{top} to LAYERS in {__file__}")


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement imports: for ``from X import a, b``, ``X.a`` where that
    is a module, else ``X`` (where the name is defined)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names]
    return []


def _owner(name: str) -> str | None:
    """The geoseg module that ``name`` (a module, or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported geoseg module, line) for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        for name in _imported_names(node, package):
            target = _owner(name) if name.startswith("geoseg") else None
            if target and target != module:
                yield target, node.lineno


GRAPH = {module: dict(imports(module)) for module in MODULES}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root, targets in graph.items():
        if root in index:
            continue
        work = [(root, iter(targets))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(graph[child])))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} (layer {LAYERS[layer_of(module)][0]}) imports {target} (layer "
              f"{LAYERS[layer_of(target)][0]}) at line {line}"
              for module, targets in GRAPH.items() for target, line in targets.items()
              if layer_of(target) > layer_of(module)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    found = cycles(GRAPH)
    described = ["  ".join(f"{m} -> {t}:{line}" for m in component
                           for t, line in GRAPH[m].items() if t in component)
                 for component in found]
    assert not found, "\n".join(described)


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [["a", "b", "c"]]),
    ({"a": {"b": 1}, "b": {}, "c": {"b": 1}}, []),
    ({"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}}, [["a", "b"], ["c", "d"]]),
])
def test_cycle_finder_finds_loops(graph, expected):
    assert sorted(cycles(graph)) == expected


def test_function_level_imports_count(tmp_path):
    tree = ast.parse("def f():\n    from geoseg.jobs import spec, provenance\n")
    names = [n for node in ast.walk(tree) for n in _imported_names(node, "geoseg.io")]
    assert names == ["geoseg.jobs.spec", "geoseg.jobs.provenance"]


def test_the_architecture_page_shows_this_table():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| ")}
    for index, (name, members) in enumerate(LAYERS):
        row = rows.get(f"{index} {name}")
        assert row is not None, f"docs/architecture.md has no row '| {index} {name} |'"
        for member in members:
            shown = f"`{member}/`" if (PACKAGE / member).is_dir() else f"`{member}.py`"
            assert shown in row, f"docs/architecture.md: layer {name} does not show {shown}"


def _package(module: str) -> str:
    """``geoseg.X`` for any module of the folder ``geoseg/X`` (or the file ``geoseg/X.py``)."""
    return ".".join(module.split(".")[:2])


def test_no_two_folders_import_each_other():
    """Within a layer too, imports between folders flow one way: models -> ensembles -> models
    had no module cycle, yet made the two folders one tangle."""
    folders: dict[str, dict[str, int]] = {}
    for module, targets in GRAPH.items():
        mine = folders.setdefault(_package(module), {})
        for target, line in targets.items():
            if _package(target) != _package(module):
                mine.setdefault(_package(target), line)
    for module in list(folders):
        for target in folders[module]:
            folders.setdefault(target, {})
    found = cycles(folders)
    assert not found, "\n".join(
        " ".join(f"{a} -> {b}" for a in component for b in folders[a] if b in component)
        for component in found)
