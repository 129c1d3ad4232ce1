"""Layers import downward only: a module never imports a package above its own layer; and the
modules of a package import one another without a cycle when they are imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "antifragile"

#: the layers, bottom first; a package may import its own layer and the ones below it.
#: observability is reachable from every layer, so it sits at the bottom and imports only
#: the standard library and third-party packages (never ``antifragile.errors``). The sandbox and
#: the service are siblings (neither imports the other); the demo runs both; the command line
#: sits on top of everything.
LAYERS: dict[str, int] = {
    "observability": 0,
    "errors": 1,
    "policies": 2,
    "stores": 3,
    "http": 4,
    "jobs": 5,
    "connectors": 6,
    "inbound": 7,
    "sandbox": 8,
    "service": 8,
    "demo": 9,
    "cli": 10,
}


def _imported(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Every ``antifragile`` module *module* imports (at any depth: functions, TYPE_CHECKING)."""
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            # a bare ``import antifragile`` reads ``__version__``: the root imports nothing eagerly
            found.extend((node.lineno, a.name) for a in node.names if a.name != "antifragile")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name.split(".")[0] == "antifragile"]


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.parent != SRC)


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in the layer order before it can import anything."""
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_downward(path: Path) -> None:
    """No module imports a layer above its own (nor the lazy top-level ``antifragile``)."""
    relative = path.relative_to(SRC.parent).with_suffix("")
    module = ".".join(relative.parts)
    own = relative.parts[1]
    upward = []
    for line, name in _imported(ast.parse(path.read_text(encoding="utf-8")), module):
        parts = name.split(".")
        if len(parts) == 1:
            upward.append(f"line {line}: from {name} import (name the layer's package instead)")
            continue
        target = parts[1]
        if target not in LAYERS:
            upward.append(f"line {line}: {name} (not a layer)")
        elif LAYERS[target] > LAYERS[own] or (target != own and LAYERS[target] == LAYERS[own]):
            upward.append(f"line {line}: {name} ({own} -> {target})")
    assert upward == [], f"{module} imports upward: {upward}"


# -- import cycles ------------------------------------------------------------------------------

#: modules that need ``Jobs`` for their types only: they import ``antifragile.jobs._app`` under
#: ``if TYPE_CHECKING`` (and ``Jobs`` imports them lazily, in the methods that build them)
JOBS_FOR_TYPES_ONLY = ["_worker", "_saga", "_scheduler", "_function", "_dlq"]


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``<module>.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of *body* that run when the module is imported: into ``if``, ``try``,
    ``with`` and class bodies, past ``if TYPE_CHECKING`` blocks, never into functions."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If):
            test = node.test
            if _is_type_checking(test):
                found.extend(_runtime_statements(node.orelse))
            elif (
                isinstance(test, ast.UnaryOp)
                and isinstance(test.op, ast.Not)
                and _is_type_checking(test.operand)
            ):
                found.extend(_runtime_statements(node.body))
            else:
                found.extend(_runtime_statements(node.body + node.orelse))
        elif isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            found.extend(_runtime_statements(node.body + handlers + node.orelse + node.finalbody))
        elif isinstance(node, ast.With | ast.ClassDef):
            found.extend(_runtime_statements(node.body))
    return found


def _module_name(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _import_time_edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``antifragile`` modules that importing *name* imports by itself (not its parent
    packages, which Python imports first anyway): ``from package import submodule`` counts as
    the submodule, ``from package import name`` as the package."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rsplit(".", 1)[0]
    edges: set[str] = set()
    for node in _runtime_statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                edges.add(submodule if submodule in known else target)
    return {edge for edge in edges if edge in known and edge != name}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of *graph* (its modules in import order, the first repeated last), or ``[]``."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str]:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a graph with a cycle yields it, a graph without one yields
    nothing."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_cycle_among_a_packages_modules(package: str) -> None:
    """Importing any module of a package never comes back to a module already being imported:
    the import-time imports among the package's modules (``if TYPE_CHECKING`` blocks and
    imports inside functions left out) form no cycle. A cycle makes the result depend on which
    module is imported first, and names read during the import are missing half-way through."""
    modules = _all_modules()
    known = set(modules)
    prefix = f"antifragile.{package}"
    graph = {
        name: {
            edge
            for edge in _import_time_edges(name, path, known)
            if edge == prefix or edge.startswith(prefix + ".")
        }
        for name, path in modules.items()
        if name == prefix or name.startswith(prefix + ".")
    }
    cycle = _cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", JOBS_FOR_TYPES_ONLY)
def test_jobs_modules_import_jobs_only_for_types(module: str) -> None:
    """The worker, sagas, the scheduler, job functions and the dead-letter queue import
    ``Jobs`` (``antifragile.jobs._app``) only under ``if TYPE_CHECKING``, never when imported."""
    path = SRC / "jobs" / f"{module}.py"
    name = f"antifragile.jobs.{module}"
    known = set(_all_modules())
    runtime = _import_time_edges(name, path, known)
    assert "antifragile.jobs._app" not in runtime
    assert "antifragile.jobs" not in runtime  # the package imports _app
    typed = _imported(ast.parse(path.read_text(encoding="utf-8")), name)
    assert "antifragile.jobs._app" in {target for _, target in typed}
