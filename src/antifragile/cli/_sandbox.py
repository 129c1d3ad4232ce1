"""``antifragile sandbox``: serve the provider simulators until Ctrl-C."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer


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
    smtp_port: Annotated[
        int,
        typer.Option(min=-1, max=65535, help="SMTP sandbox port (0: any free port, -1: none)."),
    ] = 0,
) -> None:
    """Serve the provider simulators (Resend, ...) on one local HTTP server until Ctrl-C.

    Each provider is under its own prefix; point a connector at it with
    ANTIFRAGILE_<PROVIDER>_BASE_URL. Faults change at run time through
    PUT /_sandbox/faults; GET /_sandbox/effects lists what the providers accepted.
    """
    from antifragile.sandbox import (  # the sandbox extra
        CalComSimulator,
        HubSpotSimulator,
        ProviderSandbox,
        ResendSimulator,
        SendGridSimulator,
        ShopifySimulator,
        SlackSimulator,
        SMTPSandbox,
        TwilioSimulator,
        WhatsAppSimulator,
    )

    server = ProviderSandbox(
        [
            ResendSimulator(rate_limit=resend_rate_limit),
            ShopifySimulator(),
            WhatsAppSimulator(),
            TwilioSimulator(),
            HubSpotSimulator(),
            SlackSimulator(),
            SendGridSimulator(),
            CalComSimulator(),
        ],
        fault_file=faults,
        host=host,
        port=port,
    )

    # the SMTP sandbox records accepted messages in the same effect log (provider "smtp")
    smtp = None if smtp_port < 0 else SMTPSandbox(host=host, port=smtp_port, log=server.log)
    with server, smtp or contextlib.nullcontext():
        typer.echo(f"antifragile sandbox on {server.url} (Ctrl-C stops it)")
        for provider in server.providers:
            if provider == "slack":  # a webhook URL, not a base URL; any T.../B.../... path
                hook = f"{server.base_url(provider)}/services/T00000000/B00000000/XXXXXXXX"
                typer.echo(f"  ANTIFRAGILE_SLACK_WEBHOOK_URL={hook}")
                continue
            typer.echo(f"  ANTIFRAGILE_{provider.upper()}_BASE_URL={server.base_url(provider)}")
        if smtp is not None:
            typer.echo(f"  ANTIFRAGILE_SMTP_HOST={smtp.host} ANTIFRAGILE_SMTP_PORT={smtp.port}")
        typer.echo(f"  admin: {server.url}/_sandbox/faults, {server.url}/_sandbox/effects")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            typer.echo("sandbox stopped")
