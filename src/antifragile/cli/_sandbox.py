"""``antifragile sandbox``: serve the provider simulators until Ctrl-C."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from antifragile.sandbox import ProviderSandbox, ResendSimulator


def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8025,
    faults: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="A JSON (or YAML) fault file to start with."
        ),
    ] = None,
    resend_rate_limit: Annotated[
        int, typer.Option(min=1, help="Requests per second the Resend simulator accepts.")
    ] = 2,
) -> None:
    """Serve the provider simulators (Resend, ...) on one local HTTP server until Ctrl-C.

    Each provider is under its own prefix; point a connector at it with
    ANTIFRAGILE_<PROVIDER>_BASE_URL. Faults change at run time through
    PUT /_sandbox/faults; GET /_sandbox/effects lists what the providers accepted.
    """
    server = ProviderSandbox(
        [ResendSimulator(rate_limit=resend_rate_limit)], fault_file=faults, host=host, port=port
    )
    with server:
        typer.echo(f"antifragile sandbox on {server.url} (Ctrl-C stops it)")
        for provider in server.providers:
            typer.echo(f"  ANTIFRAGILE_{provider.upper()}_BASE_URL={server.base_url(provider)}")
        typer.echo(f"  admin: {server.url}/_sandbox/faults, {server.url}/_sandbox/effects")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            typer.echo("sandbox stopped")
