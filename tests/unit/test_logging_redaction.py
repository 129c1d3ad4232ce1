"""Logs never carry a token, an API key, a full phone number or an email address.

A whole intake conversation runs through the service's own assistant (SQLite file, the WhatsApp
and Resend simulators over real HTTP), with an integration that fails for good (Resend refuses
the API key) and one that is not configured at all; log calls that put the secrets in the
message, in ``extra=`` fields, in an exception and in structlog key-values are added on top.
Every line is captured as configured by ``antifragile serve`` (JSON, credentials from the
``ANTIFRAGILE_*`` environment) and searched.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from antifragile.inbound import parse_whatsapp
from antifragile.observability import mask_email, mask_phone, request_context
from antifragile.observability._logging import (
    configure_logging,
    redact_event,
    secrets_from_env,
)
from antifragile.policies import Constant, Retry
from antifragile.sandbox import (
    ProviderSandbox,
    ResendSimulator,
    WhatsAppSimulator,
    whatsapp_text_message,
)
from antifragile.service import Settings
from antifragile.service._assistant import Assistant

PHONE = "447700900123"
EMAIL = "ada.lovelace@example.com"
WA_TOKEN = "wa-access-token-6f1d2c9b8a7e"  # no well-known prefix: only the literal list catches it
RESEND_KEY = "resend-api-key-93ab71c4d2"  # refused by the Resend simulator
APP_SECRET = "app-secret-5d4c3b2a1f"
PHONE_ID = "106540352242922"
ANSWERS = ["Ada Lovelace", EMAIL, "A cake for 20 people", "weekday mornings"]
FORBIDDEN = (PHONE, EMAIL, WA_TOKEN, RESEND_KEY, APP_SECRET)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Every log record of the test, rendered as ``antifragile serve`` renders them."""
    env = {
        "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "ANTIFRAGILE_RESEND_API_KEY": RESEND_KEY,
        "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    with configure_logging(json=True, level="DEBUG", stream=stream, secrets=secrets_from_env()):
        yield stream


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderSandbox]:
    simulators = [
        WhatsAppSimulator(access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6),
        ResendSimulator(api_keys=["re_the_only_valid_key_1234"], rate_limit=10**6),
    ]
    with ProviderSandbox(simulators) as running:
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_BASE_URL", running.base_url("whatsapp"))
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        monkeypatch.setenv("ANTIFRAGILE_RESEND_BASE_URL", running.base_url("resend"))
        monkeypatch.setenv("ANTIFRAGILE_EMAIL_FROM", "assistant@acme.example")
        yield running


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_conversation_with_failing_integrations_logs_no_secret_and_no_pii(
    tmp_path: Path, sandbox: ProviderSandbox, captured: io.StringIO
) -> None:
    """The whole conversation and its failing integrations log their progress -- masked phone,
    step, reason, request id -- and no token, key, phone number or email address in full."""
    config = tmp_path / "antifragile.toml"
    config.write_text(
        f'[tenants.acme]\nname = "Acme"\nwhatsapp_phone_number_id = "{PHONE_ID}"\n'
        'owner_email = "owner@acme.example"\n'
    )
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
            "ANTIFRAGILE_CONFIG": str(config),
        }
    )
    assistant = Assistant(settings, integration_retry=Retry(attempts=2, backoff=Constant(0.0)))
    async with assistant:
        worker = assistant.worker(poll_interval=0.01)
        for number, text in enumerate(["Hello there", *ANSWERS]):
            payload = whatsapp_text_message(
                from_=PHONE, body=text, phone_number_id=PHONE_ID, message_id=f"wamid.{number}"
            )
            with request_context(f"req-{number}"):
                await assistant.ingest(parse_whatsapp(json.dumps(payload).encode()))
            await worker.run_until_idle()
        await worker.run_until_idle()
    assert len(sandbox.effects("whatsapp")) == 5  # every reply went out
    assert sandbox.effects("resend") == []  # the summary email failed for good

    log = logging.getLogger("antifragile.test")
    log.warning("calling with Authorization: Bearer %s for %s", WA_TOKEN, PHONE)
    log.warning(
        "contact details",
        extra={"phone": PHONE, "token": RESEND_KEY, "note": f"key={RESEND_KEY} {EMAIL}"},
    )
    try:
        raise RuntimeError(f"failed for +{PHONE} <{EMAIL}> with {RESEND_KEY}")
    except RuntimeError:
        log.exception("an unexpected failure")
    structlog.get_logger("antifragile.test").info("structlog", phone=PHONE, api_key=WA_TOKEN)

    output = captured.getvalue()
    for secret in FORBIDDEN:
        assert secret not in output, secret
    records = lines(captured)
    masked = mask_phone(PHONE)
    advanced = [r for r in records if r["event"] in ("session advanced", "session completed")]
    assert len(advanced) == 5
    assert {r["phone"] for r in advanced} == {masked}
    assert [r["step"] for r in advanced] == [0, 1, 2, 3, 4]
    assert advanced[-1]["event"] == "session completed"
    assert advanced[0]["request_id"] == "req-0"
    failed = [r for r in records if r["event"] == "session action failed"]
    assert {r["action"] for r in failed} >= {"send_summary_email"}
    assert all(r["reason"] for r in failed)
    assert masked in output
    assert mask_email(EMAIL) in output
    assert "[REDACTED]" in output
    assert all({"timestamp", "level", "logger", "event"} <= set(r) for r in records)


def test_the_redaction_processor_on_its_own() -> None:
    """Credential fields are replaced whole, contact fields masked, free text scrubbed, nested
    values too; the processors' own fields are left alone."""
    event = redact_event(
        None,
        "info",
        {
            "event": f"sent to {PHONE} and {EMAIL}",
            "api_key": "anything",
            "hub_secret": "x",
            "to": PHONE,
            "email": EMAIL,
            "nested": {"headers": {"Authorization": "Bearer abcdef123456"}, "n": 3},
            "request_id": "req-447700900123",
        },
    )
    assert event["event"] == f"sent to {mask_phone(PHONE)} and {mask_email(EMAIL)}"
    assert event["api_key"] == event["hub_secret"] == "[REDACTED]"
    assert event["to"] == mask_phone(PHONE)
    assert event["email"] == mask_email(EMAIL)
    assert event["nested"] == {"headers": {"Authorization": "[REDACTED]"}, "n": 3}
    assert event["request_id"] == "req-447700900123"


def test_credentials_are_read_from_the_environment() -> None:
    """Every ``ANTIFRAGILE_*`` variable named like a credential is a secret (each part of a
    comma-separated list); other variables are not."""
    found = secrets_from_env(
        {
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": "tok-1, tok-2",
            "ANTIFRAGILE_RESEND_API_KEY": "key-1",
            "ANTIFRAGILE_SMTP_PASSWORD": "pw-1",
            "ANTIFRAGILE_DATABASE_URL": "sqlite:///x.db",
            "HOME": "/root",
        }
    )
    assert sorted(found) == ["key-1", "pw-1", "tok-1", "tok-2"]
