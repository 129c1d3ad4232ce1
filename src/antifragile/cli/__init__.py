"""The ``antifragile`` command line (typer + rich: the ``cli`` extra).

:func:`main`, the console script, imports the commands only when it runs, so that in an install
without an extra a command needs, it says which extra to install instead of a traceback.
"""

import importlib as _importlib
import sys as _sys
import typing as _typing

if _typing.TYPE_CHECKING:
    from antifragile.cli._app import app

#: the extra each command needs
COMMAND_EXTRAS: dict[str, str] = {
    "serve": "service",
    "health": "cli",
    "breakers": "service",
    "sandbox": "sandbox",
    "demo": "demo",
    "worker": "cli",
    "scheduler": "cli",
    "jobs": "cli",
    "dlq": "cli",
    "migrate": "cli",
    "backup": "cli",
    "restore": "cli",
}

_CLI = frozenset({"typer", "rich", "click", "structlog"})
_SERVICE = _CLI | {
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "jwt",
    "cryptography",
    "prometheus_client",
    "yaml",
    "aiosmtplib",
}
# the simulators sign and parse webhooks with the inbound layer (templates, flows, SMTP client)
_SANDBOX = _CLI | {"aiosmtpd", "h11", "yaml", "jinja2", "aiosmtplib"}

#: the top-level modules each extra installs (a module outside the command's extra is reported
#: with the first extra here that has it)
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "cli": _CLI,
    "service": _SERVICE,
    "sandbox": _SANDBOX,
    "demo": _SERVICE | _SANDBOX,
    "postgres": frozenset({"psycopg", "psycopg_pool"}),
    "redis": frozenset({"redis"}),
    "otel": frozenset({"opentelemetry"}),
}


def missing_extra(command: str | None, module: str | None) -> str | None:
    """The extra to install when *command* failed to import *module* (``None``: not ours)."""
    root = (module or "").partition(".")[0]
    wanted = COMMAND_EXTRAS.get(command or "", "cli")
    if root in EXTRA_MODULES[wanted]:
        return wanted
    for extra, modules in EXTRA_MODULES.items():
        if root in modules:
            return extra
    return None


def _command(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> None:
    """Entry point of the ``antifragile`` console script."""
    command = _command(_sys.argv[1:])
    try:
        from antifragile.cli._app import app

        app()
    except ModuleNotFoundError as exc:
        extra = missing_extra(command, exc.name)
        if extra is None:
            raise
        what = f"antifragile {command}" if command in COMMAND_EXTRAS else "antifragile"
        _sys.stderr.write(
            f"{what} needs the '{extra}' extra (module {exc.name!r} is not installed): "
            f"pip install 'antifragile[{extra}]'\n"
        )
        raise SystemExit(1) from None


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        if name == "app":
            value = _importlib.import_module("antifragile.cli._app").app
            globals()["app"] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMAND_EXTRAS", "EXTRA_MODULES", "app", "main", "missing_extra"]
