"""A fault document's ``simulators`` section: simulator settings changed while it runs.

::

    {"simulators": {"slack": {"burst": 5, "rate": 1}},
     "whatsapp": {"POST /{version}/{phone_number_id}/messages": {"script": [...]}}}

Each provider named takes the settings its simulator lists in ``settable`` (Slack: ``rate``,
``burst``); anything else is a ConfigurationError and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.sandbox._simulator import Simulator

#: the key of the section in a fault document
SECTION = "simulators"


def configure_simulators(
    data: Mapping[str, Any], simulators: Mapping[str, Simulator]
) -> Mapping[str, Any]:
    """Apply *data*'s ``simulators`` section to *simulators*; the rest of *data* (the fault
    plans)."""
    if not isinstance(data, Mapping) or SECTION not in data:
        return data
    section = data[SECTION]
    if not isinstance(section, Mapping) or not all(
        isinstance(v, Mapping) for v in section.values()
    ):
        raise ConfigurationError(f"{SECTION!r} maps providers to their settings")
    unknown = sorted(set(section) - set(simulators))
    if unknown:
        raise ConfigurationError(f"{SECTION}: no simulator for {', '.join(unknown)}")
    for provider, settings in section.items():  # check all before changing any
        simulators[provider].check_settings(settings)
    for provider, settings in section.items():
        simulators[provider].configure(settings)
    return {k: v for k, v in data.items() if k != SECTION}
