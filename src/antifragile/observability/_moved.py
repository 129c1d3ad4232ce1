"""Names a package no longer exports: they keep working, with a warning, for one release.

Each package keeps a table ``name -> (module where it lives, public package or None)`` and its
module ``__getattr__`` hands unknown names to :func:`moved_attribute`.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

#: a package's moved names: where each lives, and the public package to import it from
#: (``None``: it is internal now)
Moved = Mapping[str, tuple[str, str | None]]


def moved_attribute(package: str, name: str, moved: Moved) -> Any:
    """*name* of *package*, which no longer exports it: warns (``DeprecationWarning`` naming
    the import to use, at the caller's line) and returns it from where it lives; an unknown
    name is an ``AttributeError``, as for any module."""
    entry = moved.get(name)
    if entry is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, public = entry
    advice = f"use `from {public} import {name}`" if public else "it is internal"
    warnings.warn(
        f"{package}.{name} is deprecated and will be removed in the next release; {advice}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), name)
