"""The public surface: each package's ``__all__`` is exactly the public names it defines, the top
level is a short, pinned list, and names moved off the top level still work, with a warning."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import types
import warnings

import pytest

import antifragile

PACKAGES = [
    "antifragile",
    *sorted(
        info.name
        for info in pkgutil.iter_modules(antifragile.__path__, "antifragile.")
        if info.ispkg
    ),
]

#: what ``from antifragile import ...`` offers; adding or removing a name is a deliberate act
TOP_LEVEL = [
    "AntifragileError",
    "AuthenticationError",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "Constant",
    "DeadlineExceededError",
    "DecorrelatedJitter",
    "ErrorCode",
    "Exponential",
    "FakeClock",
    "Fallback",
    "Hedge",
    "IntegrationError",
    "InvalidRequestError",
    "JobContext",
    "Jobs",
    "Linear",
    "NetworkError",
    "NotFoundError",
    "PermanentError",
    "Policy",
    "RateLimitedError",
    "RejectedError",
    "ResilientClient",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "SchemaVersionError",
    "SharedCircuitBreaker",
    "SharedTokenBucket",
    "StaleCache",
    "StoreError",
    "StoreUnavailableError",
    "SyncResilientClient",
    "SystemClock",
    "TokenBucket",
    "TransientError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "Worker",
    "__version__",
    "open_store",
    "request_context",
    "resilient",
]


def _public_names(module: types.ModuleType) -> list[str]:
    """The names *module* defines for its users: no underscore, no submodule."""
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    ]
    return sorted([*names, *(["__version__"] if "__version__" in vars(module) else [])])


@pytest.mark.parametrize("name", PACKAGES)
def test_all_equals_the_public_names_defined(name: str) -> None:
    """``__all__`` lists each public name of the package once, and the package defines no
    public name it leaves out (names loaded on first use count once they are resolved)."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), name
    for attribute in exported:
        getattr(module, attribute)  # resolves the names a package imports on first use
    assert sorted(exported) == _public_names(module)


def test_the_top_level_is_pinned() -> None:
    """The top level offers the policies, clocks, clients, error tree, jobs, the shared breaker
    and bucket, ``open_store`` and ``request_context``: about forty names, no more."""
    assert sorted(antifragile.__all__) == sorted(TOP_LEVEL)
    assert dir(antifragile) == sorted({*vars(antifragile), *TOP_LEVEL})


DEPRECATED = sorted(antifragile._DEPRECATED.items())


@pytest.mark.parametrize(("name", "package"), DEPRECATED, ids=[n for n, _ in DEPRECATED])
def test_a_name_moved_off_the_top_level_warns_and_names_its_new_path(
    name: str, package: str
) -> None:
    """``antifragile.<moved name>`` is the same object as before, with a DeprecationWarning that
    says which import to write instead."""
    with pytest.warns(DeprecationWarning, match=rf"use `from {package} import {name}`"):
        value = getattr(antifragile, name)
    assert value is getattr(importlib.import_module(package), name)
    assert name in importlib.import_module(package).__all__


def test_from_import_of_a_moved_name_warns() -> None:
    """The ``from antifragile import X`` form goes through the same warning."""
    with pytest.warns(DeprecationWarning, match="antifragile.observability"):
        from antifragile import RecordingObserver  # type: ignore[attr-defined]
    assert RecordingObserver.__name__ == "RecordingObserver"


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name that never existed raises AttributeError (no warning, no import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            antifragile.Nope  # type: ignore[attr-defined]  # noqa: B018


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_antifragile_loads_no_dependency() -> None:
    """``import antifragile`` imports none of its layers and none of httpx, pydantic, fastapi:
    each name loads its layer on first use."""
    loaded = _loaded_after("import antifragile")
    assert {"httpx", "pydantic", "fastapi", "structlog", "antifragile.policies"}.isdisjoint(loaded)
    assert [m for m in loaded if m.startswith("antifragile.")] == []


def test_the_policy_core_loads_neither_http_nor_jobs() -> None:
    """A program that only wants ``Policy`` loads the policies (and errors, observability) --
    not the HTTP client, the stores, the jobs, httpx, pydantic or any web framework."""
    loaded = _loaded_after("from antifragile import Policy, Retry, FakeClock, RateLimitedError")
    assert "antifragile.policies" in loaded
    for heavy in (
        "antifragile.http",
        "antifragile.jobs",
        "antifragile.stores",
        "antifragile.errors._envelope",
        "httpx",
        "pydantic",
        "fastapi",
    ):
        assert heavy not in loaded, heavy


def test_classification_without_httpx_still_knows_timeouts_and_resets() -> None:
    """In a process that never imported httpx, a plain ``TimeoutError`` or
    ``ConnectionResetError`` is still classified (and no httpx exception can exist there)."""
    code = (
        "from antifragile.errors import classify_exception\n"
        "import sys\n"
        "assert 'httpx' not in sys.modules\n"
        "print(classify_exception(TimeoutError()).code,"
        " classify_exception(ConnectionResetError()).code,"
        " classify_exception(ValueError()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["TIMEOUT", "NETWORK", "None"]


def test_observability_loads_without_the_errors_layer() -> None:
    """The bottom layer stands alone: importing it loads nothing from ``antifragile.errors``."""
    loaded = _loaded_after("import antifragile.observability")
    assert "antifragile.observability" in loaded
    assert not any(m.startswith("antifragile.errors") for m in loaded)


def test_implementation_modules_are_private() -> None:
    """Below each layer package, modules are private (``_name``): users import from packages."""
    for info in pkgutil.walk_packages(antifragile.__path__, "antifragile."):
        if info.ispkg:
            continue
        assert info.name.split(".")[-1].startswith("_"), info.name
        importlib.import_module(info.name)


def test_py_typed_marker_ships() -> None:
    """The package declares itself typed (PEP 561)."""
    from importlib.resources import files

    assert files("antifragile").joinpath("py.typed").is_file()
