"""The shape of the house: no import circles in klinetrio/, and nobody but the entry points
imports the composition root (the API learns of the collector through a snapshot callable and
the fan-out, never by reaching into it). Read from the source with ``ast``, every import
counted, module-level and deferred alike."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "klinetrio"
ROOT = "klinetrio.collector"
ALLOWED_TO_IMPORT_ROOT = {"klinetrio", "klinetrio.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # The module itself, or the package whose attribute it is.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_only_the_entry_points_import_the_composition_root() -> None:
    importers = {module for module, deps in graph().items() if ROOT in deps}
    assert importers <= ALLOWED_TO_IMPORT_ROOT, sorted(importers - ALLOWED_TO_IMPORT_ROOT)


def test_there_are_no_import_circles() -> None:
    deps = graph()
    # A package importing its own submodules (re-exports in __init__) is not a circle.
    edges = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in deps.items()}
    for module in edges:
        edges[module] = {d for d in edges[module] if not module.startswith(d + ".")}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        seen[module] = 1
        stack.append(module)
        for dep in sorted(edges.get(module, ())):
            if seen.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if dep not in seen:
                visit(dep)
        stack.pop()
        seen[module] = 2

    for module in sorted(edges):
        if module not in seen:
            visit(module)


def test_no_module_shadows_a_public_name() -> None:
    """``klinetrio.backfill`` is the function even after every module was imported: no
    submodule of the package is named like one of its public names."""
    import importlib
    import inspect

    import klinetrio

    submodules = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert submodules.isdisjoint(klinetrio.__all__)
    for name in sorted(graph()):
        if name != "klinetrio.__main__":  # that one runs the command
            importlib.import_module(name)
    assert inspect.iscoroutinefunction(klinetrio.backfill)


def test_test_files_have_unique_names() -> None:
    """pytest imports test modules by basename (rootdir-relative, no packages): two files of
    one name in different folders stop the whole run at collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
