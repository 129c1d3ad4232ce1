"""No connector's error carries a full phone number or email address.

Each connector is driven, over real HTTP (a FlakyServer answering in the provider's error format)
or real SMTP (an aiosmtpd server), to an error whose provider answer echoes the phone number or
email address of the request back; the exception's message, its detail and the errors it was
raised from hold only the masked forms (``+4477••••••23``, ``a•••@example.com``) -- what a job's
history or the dead-letter queue would keep. Time is a FakeClock: no real back-off sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from antifragile import FakeClock, IntegrationError, UpstreamUnavailableError
from antifragile.connectors import (
    CalComConnector,
    DeliveryUnknownError,
    HubSpotConnector,
    ResendConnector,
    SendGridConnector,
    ShopifyConnector,
    SMTPConnector,
    TwilioConnector,
    WhatsAppConnector,
)
from antifragile.observability import mask_email, mask_phone
from antifragile.observability._redaction import MASK, mask_values
from antifragile.sandbox import Fault, FlakyServer

PHONE = "+447700900123"
DIGITS = "447700900123"
EMAIL = "ada@example.com"
MASKED_PHONE = mask_phone(PHONE)
MASKED_EMAIL = mask_email(EMAIL)
SID = "AC" + "0123456789abcdef" * 2

Call = Callable[[str, FakeClock], Awaitable[Any]]
HTML = {"content-type": "text/html"}


def texts_of(error: BaseException) -> list[str]:
    """The message and detail of *error* and of every error it was raised from."""
    found: list[str] = []
    current: BaseException | None = error
    while current is not None and len(found) < 20:
        found.append(str(current))
        if isinstance(current, IntegrationError) and current.detail:
            found.append(current.detail)
        current = current.__cause__ or current.__context__
    return found


def assert_only_masked(error: BaseException, *masked: str) -> None:
    texts = texts_of(error)
    joined = "\n".join(texts)
    assert DIGITS not in joined
    assert "7700 900123" not in joined
    assert EMAIL not in joined.lower()
    # the provider's echo made it through, masked: the check above is not vacuous
    assert any(m in joined for m in masked), joined


def test_mask_values_masks_every_spelling_of_a_known_value() -> None:
    """A known phone number is masked with or without ``+``, a scheme or separators, and a
    known email whatever its case; other numbers (ids) and other text are kept."""
    text = (
        f"to whatsapp:{PHONE}, {DIGITS}, +44 7700 900123, ADA@Example.com; Existing ID: 37765128953"
    )
    masked = mask_values(text, [f"whatsapp:{PHONE}", EMAIL])
    assert masked == (
        f"to whatsapp:{MASKED_PHONE}, {MASKED_PHONE}, {MASKED_PHONE}, {MASKED_EMAIL}; "
        "Existing ID: 37765128953"
    )
    assert MASK in MASKED_PHONE
    assert mask_values(text, ["not personal", None]) == text


async def _twilio(url: str, clock: FakeClock) -> Any:
    async with TwilioConnector(
        SID, "token-123", base_url=url, clock=clock, timeout=1.0, reconcile_grace=0.0
    ) as twilio:
        return await twilio.send_message(f"whatsapp:{PHONE}", "hi", "whatsapp:+15550001111")


async def _whatsapp(url: str, clock: FakeClock) -> Any:
    async with WhatsAppConnector(
        "wa-token-123", phone_number_id="1234", base_url=url, clock=clock, timeout=1.0
    ) as whatsapp:
        return await whatsapp.send_text(DIGITS, "hi")


async def _resend(url: str, clock: FakeClock) -> Any:
    async with ResendConnector("re_test_key_123456", base_url=url, clock=clock) as resend:
        return await resend.send_email(
            sender="shop@shop.example", to=EMAIL, subject="s", text="t", idempotency_key="k1"
        )


async def _sendgrid(url: str, clock: FakeClock) -> Any:
    async with SendGridConnector("SG.test-key", base_url=url, clock=clock) as sendgrid:
        return await sendgrid.send_email(
            sender="shop@shop.example",
            to={"email": EMAIL, "name": "Ada"},
            subject="s",
            text="t",
            idempotency_key="k1",
        )


async def _hubspot(url: str, clock: FakeClock) -> Any:
    async with HubSpotConnector("pat-test-token", base_url=url, clock=clock) as hubspot:
        return await hubspot.create_contact(EMAIL, {"phone": PHONE})


async def _shopify(url: str, clock: FakeClock) -> Any:
    async with ShopifyConnector("shpat_test", base_url=url, clock=clock) as shopify:
        return await shopify.create_customer(email=EMAIL, phone=PHONE)


async def _calcom(url: str, clock: FakeClock) -> Any:
    async with CalComConnector("cal_test_key123", base_url=url, clock=clock) as calcom:
        return await calcom.create_booking(
            start="2030-01-07T10:00:00Z",
            attendee_name="Ada",
            attendee_email=EMAIL,
            attendee_time_zone="Europe/London",
            idempotency_key="k1",
            event_type_id=7,
        )


ECHOED = f"{EMAIL} / {PHONE} / {DIGITS}"

CASES: dict[str, tuple[Call, Fault, type[IntegrationError], tuple[str, ...]]] = {
    "twilio refused": (
        _twilio,
        Fault.status(
            400,
            json={
                "code": 21211,
                "message": f"The 'To' number whatsapp:{PHONE} is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        ),
        IntegrationError,
        (MASKED_PHONE,),
    ),
    "twilio unavailable": (
        _twilio,
        Fault.status(503, json={"code": 20500, "message": f"failed for {PHONE}", "status": 503}),
        UpstreamUnavailableError,
        (MASKED_PHONE,),
    ),
    "whatsapp refused": (
        _whatsapp,
        Fault.status(
            400,
            json={
                "error": {
                    "message": f"(#131030) Recipient phone number {DIGITS} not in allowed list",
                    "type": "OAuthException",
                    "code": 131030,
                    "error_data": {"messaging_product": "whatsapp", "details": ECHOED},
                }
            },
        ),
        IntegrationError,
        (MASKED_PHONE,),
    ),
    "whatsapp unavailable": (
        _whatsapp,
        Fault.status(503, json={"error": {"message": f"down for {DIGITS}", "code": 2}}),
        UpstreamUnavailableError,
        (MASKED_PHONE,),
    ),
    "whatsapp unknown": (
        _whatsapp,
        Fault.ok(502, body=b"<html><h1>502 Bad Gateway</h1></html>", headers=HTML),
        DeliveryUnknownError,
        (MASKED_PHONE,),
    ),
    "resend": (
        _resend,
        Fault.status(
            422,
            json={"statusCode": 422, "name": "validation_error", "message": f"bad to: {EMAIL}"},
        ),
        IntegrationError,
        (MASKED_EMAIL,),
    ),
    "sendgrid": (
        _sendgrid,
        Fault.status(
            400,
            json={"errors": [{"message": f"invalid address {EMAIL}", "field": "to", "help": None}]},
        ),
        IntegrationError,
        (MASKED_EMAIL,),
    ),
    "hubspot": (
        _hubspot,
        Fault.status(
            400,
            json={
                "status": "error",
                "message": f"Property values were not valid: {ECHOED}",
                "correlationId": "c-1",
                "category": "VALIDATION_ERROR",
            },
        ),
        IntegrationError,
        (MASKED_EMAIL, MASKED_PHONE),
    ),
    "shopify": (
        _shopify,
        Fault.status(422, json={"errors": {"email": [f"{EMAIL} is invalid"], "phone": [PHONE]}}),
        IntegrationError,
        (MASKED_EMAIL, MASKED_PHONE),
    ),
    "calcom": (
        _calcom,
        Fault.status(
            400,
            json={
                "status": "error",
                "error": {"code": "BadRequestException", "message": f"bad attendee {EMAIL}"},
            },
        ),
        IntegrationError,
        (MASKED_EMAIL,),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_http_connector_errors_carry_only_masked_personal_data(case: str) -> None:
    """The provider echoes the request's phone number / email in its error answer: the
    connector's exception (message, detail, causes) holds only the masked forms."""
    call, fault, error_type, masked = CASES[case]
    clock = FakeClock()
    with FlakyServer(default=fault) as server, pytest.raises(error_type) as caught:
        await call(server.url, clock)
    assert_only_masked(caught.value, *masked)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _RejectingRecipients:
    """An SMTP server that refuses every recipient, naming it (as real servers do)."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


@pytest.fixture
def rejecting_smtp() -> Iterator[tuple[str, int]]:
    port = _free_port()
    controller = Controller(_RejectingRecipients(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port
    finally:
        controller.stop()


async def test_smtp_errors_carry_only_masked_addresses(rejecting_smtp: tuple[str, int]) -> None:
    """A real SMTP server refuses the recipient, echoing the address in its reply: the
    connector's exception holds only the masked address."""
    host, port = rejecting_smtp
    smtp = SMTPConnector(host, port, clock=FakeClock(), timeout=30.0)
    with pytest.raises(IntegrationError) as caught:
        await smtp.send_email(
            sender="shop@shop.example", to=EMAIL, subject="s", text="t", idempotency_key="k1"
        )
    assert_only_masked(caught.value, MASKED_EMAIL)
