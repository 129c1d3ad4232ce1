"""``antifragile demo``: the service under a scripted incident, against a naive baseline.

:func:`run_demo` starts the provider sandbox, the service (API and worker) and simulated
customers who go through the intake flow over signed WhatsApp webhooks while a
:class:`FaultScript` plays; :func:`write_report` turns its :class:`DemoResult` into
``report.html``, ``timeline.svg`` and ``summary.json``.
"""

import typing as _typing

from antifragile.demo._run import DemoConfig, DemoResult, Progress, run_demo
from antifragile.demo._scenario import (
    DEFAULT_SCRIPT,
    FULL_PACE,
    QUICK_PACE,
    Customer,
    FaultScript,
    FaultWindow,
    Pace,
    load_fault_script,
    make_customers,
)
from antifragile.observability._moved import moved_attribute as _moved_attribute

#: names this package exported before 0.2 that are now internal (or live elsewhere); they keep
#: working, with a DeprecationWarning, until the release after
_MOVED: dict[str, tuple[str, str | None]] = {
    "Sample": ("antifragile.demo._run", None),
    "Tally": ("antifragile.demo._run", None),
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        return _moved_attribute(__name__, name, _MOVED)


__all__ = [
    "DEFAULT_SCRIPT",
    "FULL_PACE",
    "QUICK_PACE",
    "Customer",
    "DemoConfig",
    "DemoResult",
    "FaultScript",
    "FaultWindow",
    "Pace",
    "Progress",
    "load_fault_script",
    "make_customers",
    "run_demo",
]
