"""The package map in the README's Architecture section holds: every import goes down the layers,
no module reaches into another package's private ``_module``, and modules form no import circle.
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import PROJECT

PACKAGE = PROJECT / "mmsearch"
# Top to bottom, as the README draws them: a package imports only from rows below its own.
LAYERS = [["cli"], ["reproduce"], ["report", "export"], ["search"], ["serving", "pipeline"], ["tracking"],
          ["training", "charts"], ["stats", "config"], ["models", "optim"], ["text", "data"], ["runtime"], ["_floor"]]
RANK = {name: i for i, row in enumerate(LAYERS) for name in row}


def _module(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """The package a module belongs to: ``search`` for mmsearch.search._worker, ``_floor`` for the
    top-level helpers (mmsearch._disk, mmsearch.errors) and mmsearch itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "_floor"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each ``from mmsearch... import`` that runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return [(node.lineno, node.module) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsearch")
            and id(node) not in skip]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and "_shipped" not in p.parts)


def test_every_package_is_on_the_map() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(RANK) - {"_floor"}, "add the package to LAYERS and to the README's map"


def test_imports_go_down_the_layers_and_never_into_another_package_s_private_module() -> None:
    wrong = []
    for path in _sources():
        here = _package(_module(path))
        for line, target in _imports(path):
            there = _package(target)
            parts = target.split(".")
            if there != here and RANK[there] <= RANK[here]:
                wrong.append(f"{path.relative_to(PROJECT)}:{line}: {here} imports {target} (not below it)")
            if there != here and len(parts) > 2 and parts[2].startswith("_"):
                wrong.append(f"{path.relative_to(PROJECT)}:{line}: {target} is private to {there}")
    assert not wrong, "\n".join(wrong)


def test_modules_form_no_import_circle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {_module(p) for p in _sources()}
    for path in _sources():
        for _, target in _imports(path):
            # A package's public name resolves to the package's own __init__; follow it as a module.
            graph[_module(path)].add(target if target in modules else target.rsplit(".", 1)[0])
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            cycle = visit(nxt, stack + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for module in sorted(modules):
        cycle = visit(module, [])
        assert cycle is None, " -> ".join(cycle)
