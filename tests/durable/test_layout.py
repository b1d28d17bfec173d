"""The shape of durable/: the rules its folders state, checked on the source.

import-linter checks the layers (pyproject.toml); these check what it does not: no
import cycle between modules (TYPE_CHECKING imports included), no private name
imported from another module, few top-level modules, small modules, and no class
built from several bases outside the error hierarchy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import durable

ROOT = Path(durable.__file__).parent
PACKAGE = "durable"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.append((child, None) if child in MODULES else (base, alias.name))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {m for m, _ in _imports(name, path) if m in MODULES and m != PACKAGE}
        graph[name] = targets - {name}
    return graph


def test_no_module_of_durable_is_in_an_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    crossing = [
        f"{name} imports {what} from {module}"
        for name, path in MODULES.items()
        for module, what in _imports(name, path)
        if what is not None and what.startswith("_") and what != "__version__"
    ]
    assert crossing == []


def test_durable_has_few_top_level_modules_and_each_folder_states_its_rule() -> None:
    top = list(ROOT.glob("*.py"))
    assert len(top) <= 12, sorted(p.name for p in top)
    for folder in (p for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc is not None, folder.name
        assert "Rule:" in doc, folder.name


def test_every_module_is_under_600_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k >= 600} == {}


def test_no_class_has_several_bases_outside_the_error_hierarchy() -> None:
    several = []
    for name, path in MODULES.items():
        if name == "durable.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and len(node.bases) > 1:
                bases = [ast.unparse(b) for b in node.bases]
                if not any(b.startswith("Generic") or b == "Protocol" for b in bases):
                    several.append(f"{name}.{node.name}({', '.join(bases)})")
    assert several == []


def test_the_contributing_guide_maps_every_module_of_durable() -> None:
    guide = (ROOT.parent / "docs" / "contributing.md").read_text()
    missing = [
        str(path.relative_to(ROOT.parent))
        for path in MODULES.values()
        if f"`{path.relative_to(ROOT.parent)}`" not in guide
    ]
    assert missing == []
