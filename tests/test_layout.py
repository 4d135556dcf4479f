"""The layout shows the architecture (docs/layout.md): read from the source itself, every
import statement of every module, at any depth (imports inside functions count, as they run)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "effv2"


def _imports(path: Path) -> set[str]:
    """The effv2 modules a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return {name for name in found if name == "effv2" or name.startswith("effv2.")}


def _part(module: str) -> str:
    """The package (or top-level module) of effv2 a module belongs to: effv2.data.pipeline -> data."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources() -> dict[str, Path]:
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        sources[".".join(relative.parts).removesuffix(".__init__")] = path
    for path in sorted((REPO / "hydra_plugins").rglob("*.py")):
        sources[".".join(path.relative_to(REPO).with_suffix("").parts)] = path
    return sources


def test_only_the_tasks_use_the_training_loop() -> None:
    users = {
        module: sorted(name for name in _imports(path) if name.startswith("effv2.training"))
        for module, path in _sources().items()
        if not module.startswith(("effv2.training", "effv2.tasks"))
    }
    assert {module: names for module, names in users.items() if names} == {}


def test_no_two_packages_import_each_other_in_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in _sources().items():
        if not module.startswith("effv2."):
            continue
        source = _part(module)
        targets = {_part(name) for name in _imports(path)} - {source, ""}
        graph.setdefault(source, set()).update(target for target in targets if (PACKAGE / target).exists()
                                               or (PACKAGE / f"{target}.py").exists())  # fmt: skip
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in trail:
                loop = trail[trail.index(target) :]
                first = loop.index(min(loop))  # one spelling per cycle, from its first package by name
                cycles.append(" -> ".join([*loop[first:], *loop[:first], min(loop)]))
            elif len(trail) < len(graph):
                visit(target, [*trail, target])

    for start in sorted(graph):
        visit(start, [start])
    assert sorted(set(cycles)) == []
