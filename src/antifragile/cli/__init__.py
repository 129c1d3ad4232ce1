"""The ``antifragile`` command line (typer + rich)."""

from antifragile.cli._app import app, main

__all__ = ["app", "main"]
