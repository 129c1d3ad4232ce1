"""``antifragile sandbox``: serve the provider simulators until Ctrl-C."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from antifragile.errors import ConfigurationError


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
    slack_rate: Annotated[
        float, typer.Option(min=0.001, help="Messages per second a Slack hook accepts.")
    ] = 1.0,
    slack_burst: Annotated[
        float, typer.Option(min=1, help="Messages a Slack hook accepts at once (its burst).")
    ] = 1.0,
    smtp_port: Annotated[
        int,
        typer.Option(min=-1, max=65535, help="SMTP sandbox port (0: any free port, -1: none)."),
    ] = 0,
    webhook_url: Annotated[
        list[str] | None,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_WEBHOOK_URLS",
            help="Where a provider's status webhooks go: PROVIDER=URL (repeatable; "
            "whatsapp, twilio, sendgrid, resend, calcom, calendly, acuity, hubspot, mandrill).",
        ),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(
            min=0.0001,
            envvar="ANTIFRAGILE_SANDBOX_TIME_SCALE",
            help="Multiplies the providers' webhook retry delays (0.01: 100 times faster).",
        ),
    ] = 1.0,
    whatsapp_app_secret: Annotated[
        str,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_WHATSAPP_APP_SECRET",
            help="The app secret WhatsApp status webhooks are signed with.",
        ),
    ] = "sandbox-app-secret",
    resend_webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_RESEND_WEBHOOK_SECRET",
            help="The whsec_ secret Resend webhooks are signed with (a fresh one if unset).",
        ),
    ] = None,
    calcom_webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_CALCOM_WEBHOOK_SECRET",
            help="The secret Cal.com webhooks are signed with.",
        ),
    ] = None,
    mandrill_webhook_key: Annotated[
        str,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_MANDRILL_WEBHOOK_KEY",
            help="The key Mandrill webhooks are signed with (X-Mandrill-Signature).",
        ),
    ] = "sandbox-mandrill-key",
    calendly_signing_key: Annotated[
        str,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_CALENDLY_SIGNING_KEY",
            help="The signing key Calendly webhooks are signed with.",
        ),
    ] = "sandbox-calendly-signing-key",
    acuity_api_key: Annotated[
        str,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_ACUITY_API_KEY",
            help="The API key Acuity accepts (user id 1) and signs its webhooks with.",
        ),
    ] = "sandbox-acuity-key",
    hubspot_client_secret: Annotated[
        str,
        typer.Option(
            envvar="ANTIFRAGILE_SANDBOX_HUBSPOT_CLIENT_SECRET",
            help="The app client secret HubSpot webhooks are signed with (v3).",
        ),
    ] = "sandbox-client-secret",
) -> None:
    """Serve the provider simulators (Resend, ...) on one local HTTP server until Ctrl-C.

    Each provider is under its own prefix; point a connector at it with
    ANTIFRAGILE_<PROVIDER>_BASE_URL. Faults change at run time through
    PUT /_sandbox/faults; GET /_sandbox/effects lists what the providers accepted.
    Status webhooks go to the --webhook-url of each provider (PUT /_sandbox/webhooks
    changes them); GET /_sandbox/deliveries counts what was delivered.
    """
    from antifragile.sandbox import (  # the sandbox extra
        AcuitySimulator,
        CalComSimulator,
        CalendlySimulator,
        HubSpotSimulator,
        MailchimpSimulator,
        MandrillSimulator,
        OpenAISimulator,
        ProviderSandbox,
        ResendSimulator,
        SendGridSimulator,
        ShopifySimulator,
        SlackSimulator,
        SMTPSandbox,
        TwilioSimulator,
        WhatsAppSimulator,
    )

    urls: dict[str, str] = {}
    for item in webhook_url or ():
        for pair in item.split():
            provider, sep, url = pair.partition("=")
            if not sep or not url:
                raise typer.BadParameter(f"{pair!r} is not PROVIDER=URL", param_hint="webhook-url")
            urls[provider] = url
    sendgrid = SendGridSimulator()
    try:
        server = ProviderSandbox(
            [
                ResendSimulator(rate_limit=resend_rate_limit, webhook_secret=resend_webhook_secret),
                ShopifySimulator(),
                WhatsAppSimulator(app_secret=whatsapp_app_secret),
                TwilioSimulator(),
                HubSpotSimulator(client_secret=hubspot_client_secret),
                SlackSimulator(rate=slack_rate, burst=slack_burst),
                sendgrid,
                CalComSimulator(webhook_secret=calcom_webhook_secret),
                CalendlySimulator(signing_key=calendly_signing_key),
                AcuitySimulator(api_key=acuity_api_key),
                OpenAISimulator(),
                MandrillSimulator(webhook_key=mandrill_webhook_key),
                MailchimpSimulator(),
            ],
            fault_file=faults,
            host=host,
            port=port,
            webhook_urls=urls,
            time_scale=time_scale,
        )
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="webhook-url") from exc
    # the SMTP sandbox records accepted messages in the same effect log (provider "smtp")
    smtp = None if smtp_port < 0 else SMTPSandbox(host=host, port=smtp_port, log=server.log)
    with server, smtp or contextlib.nullcontext():
        typer.echo(f"antifragile sandbox on {server.url} (Ctrl-C stops it)")
        for provider in server.providers:
            if provider == "slack":  # a webhook URL, not a base URL; any T.../B.../... path
                hook = f"{server.base_url(provider)}/services/T00000000/B00000000/XXXXXXXX"
                typer.echo(f"  ANTIFRAGILE_SLACK_WEBHOOK_URL={hook}")
                continue
            if provider == "openai":  # the base_url of an LLM intent classifier's settings
                typer.echo(f"  LLM intents base_url={server.base_url(provider)}/v1")
                continue
            typer.echo(f"  ANTIFRAGILE_{provider.upper()}_BASE_URL={server.base_url(provider)}")
        if smtp is not None:
            typer.echo(f"  ANTIFRAGILE_SMTP_HOST={smtp.host} ANTIFRAGILE_SMTP_PORT={smtp.port}")
        typer.echo(f"  admin: {server.url}/_sandbox/faults, {server.url}/_sandbox/effects")
        for provider, url in sorted(urls.items()):
            typer.echo(f"  {provider} status webhooks -> {url}")
        typer.echo(f"  SendGrid Event Webhook public key: {sendgrid.event_webhook_public_key}")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            typer.echo("sandbox stopped")
