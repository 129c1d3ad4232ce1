"""Layers import downward only: a module never imports a package above its own layer."""

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
