"""``antifragile demo``: the service under a scripted incident, against a naive baseline.

:func:`run_demo` starts the provider sandbox, the service (API and worker) and simulated
customers who go through the intake flow over signed WhatsApp webhooks while a
:class:`FaultScript` plays; :func:`write_report` turns its :class:`DemoResult` into
``report.html``, ``timeline.png`` and ``summary.json``.
"""

from antifragile.demo._run import DemoConfig, DemoResult, Progress, Sample, Tally, run_demo
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
    "Sample",
    "Tally",
    "load_fault_script",
    "make_customers",
    "run_demo",
]
