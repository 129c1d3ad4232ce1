"""Finding the application a CLI command works on: ``--app module:attribute`` or the service.

``--app`` names a :class:`~antifragile.jobs.Jobs`, or an object holding one as ``.jobs`` (an
application object). Without ``--app`` the command works on the service's own
:class:`~antifragile.service.Assistant`, built from the ``ANTIFRAGILE_*`` environment (and
``ANTIFRAGILE_CONFIG``) -- so ``antifragile worker`` runs the jobs ``antifragile serve``
enqueues.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.jobs import Jobs

APP_ENV = "ANTIFRAGILE_APP"


@dataclass
class Target:
    """What a command runs: the jobs, and the assistant that owns them when there is one
    (opened before the jobs run: it builds the connectors, declares the action sagas and gives
    the workers the providers' breakers)."""

    jobs: Jobs
    assistant: Any = None

    async def open(self) -> None:
        if self.assistant is not None:
            await self.assistant.open()
        else:
            await self.jobs.open()

    async def close(self) -> None:
        if self.assistant is not None:
            await self.assistant.close()
        else:
            await self.jobs.close()


def load_target(spec: str | None, *, config: str | Path | None = None) -> Target:
    """The application named by *spec* (``module:attribute``; the attribute may be dotted and
    defaults to ``jobs``), or the service's assistant when *spec* is empty (its settings from
    the environment and the TOML file *config*, default ``ANTIFRAGILE_CONFIG``)."""
    if not spec:
        from antifragile.service._assistant import Assistant
        from antifragile.service._settings import Settings

        assistant = Assistant(Settings.from_env(config_path=config))
        return Target(assistant.jobs, assistant)
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "jobs"
    if not module_name:
        raise ConfigurationError(f"--app {spec!r}: expected module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"--app {spec!r}: {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, Jobs):
        return Target(target)
    jobs = getattr(target, "jobs", None)
    if not isinstance(jobs, Jobs):
        raise ConfigurationError(
            f"--app {spec!r} is a {type(target).__name__}, not an antifragile Jobs object"
        )
    opener = getattr(target, "open", None)
    return Target(jobs, target if callable(opener) else None)


def load_jobs(spec: str) -> Jobs:
    """The :class:`Jobs` named by *spec* (see :func:`load_target`)."""
    return load_target(spec).jobs
