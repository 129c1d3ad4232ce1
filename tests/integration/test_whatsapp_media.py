"""WhatsApp media and read receipts against the sandbox's Cloud API simulator over real HTTP:
images and documents sent by link, inbound media downloaded through the media endpoint, and
processed messages marked read (with the typing indicator) as the tenant says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile import ConfigurationError, FakeClock, InvalidRequestError
from antifragile.connectors import Connectors, WhatsAppConnector
from antifragile.inbound import Channel, EventKind, InboundEvent, Tenant, parse_whatsapp
from antifragile.sandbox import ProviderSandbox, WhatsAppSimulator, whatsapp_media_message
from antifragile.service import Settings
from antifragile.service._assistant import Assistant

TOKEN = "EAAG-test-token"
PHONE = "106540352242922"
TO = "15551234567"
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def simulator() -> WhatsAppSimulator:
    return WhatsAppSimulator(access_tokens=[TOKEN], phone_number_ids=[PHONE])


@pytest.fixture
def sandbox(simulator: WhatsAppSimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def whatsapp(sandbox: ProviderSandbox) -> AsyncIterator[WhatsAppConnector]:
    async with WhatsAppConnector(
        TOKEN, phone_number_id=PHONE, base_url=sandbox.base_url("whatsapp"), clock=FakeClock()
    ) as connector:
        yield connector


async def test_images_and_documents_go_out_by_link(
    sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    await whatsapp.send_media(
        TO, "image", link="https://cdn.example.com/cake.jpg", caption="Your cake"
    )
    await whatsapp.send_media(
        TO, "document", link="https://cdn.example.com/q.pdf", filename="quote.pdf"
    )
    image, document = sandbox.effects("whatsapp")
    assert image.data["type"] == "image"
    assert image.data["image"] == {
        "link": "https://cdn.example.com/cake.jpg",
        "caption": "Your cake",
    }
    assert document.data["document"] == {
        "link": "https://cdn.example.com/q.pdf",
        "filename": "quote.pdf",
    }


@pytest.mark.parametrize(
    "options",
    [
        {"kind": "gif", "link": "https://x.example/a"},
        {"kind": "image"},
        {"kind": "image", "link": "https://x.example/a", "media_id": "1"},
        {"kind": "image", "link": "ftp://x.example/a"},
        {"kind": "audio", "link": "https://x.example/a", "caption": "no"},
        {"kind": "image", "link": "https://x.example/a", "filename": "a.jpg"},
        {"kind": "image", "link": "https://x.example/a", "caption": "c" * 1025},
    ],
)
async def test_the_connector_refuses_malformed_media_before_sending(
    sandbox: ProviderSandbox, whatsapp: WhatsAppConnector, options: dict[str, Any]
) -> None:
    kind = options.pop("kind")
    with pytest.raises(ConfigurationError):
        await whatsapp.send_media(TO, kind, **options)
    assert sandbox.requests == []


@pytest.mark.parametrize(
    ("kind", "media", "needle"),
    [
        ("image", {"link": "https://x.example/a", "id": "1"}, "exactly one of link and id"),
        ("image", {"id": "404"}, "not a valid media id"),
        ("image", {"link": "file:///etc/passwd"}, "http(s) URL"),
        ("sticker", {"link": "https://x.example/a", "caption": "hi"}, "caption"),
        ("video", {"link": "https://x.example/a", "filename": "v.mp4"}, "filename"),
    ],
)
async def test_the_simulator_refuses_malformed_media(
    sandbox: ProviderSandbox, kind: str, media: dict[str, Any], needle: str
) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{sandbox.base_url('whatsapp')}/v21.0/{PHONE}/messages",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={"messaging_product": "whatsapp", "to": TO, "type": kind, kind: media},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100
    assert needle in answer.json()["error"]["error_data"]["details"]
    assert sandbox.effects("whatsapp") == []


async def test_an_inbound_image_is_downloaded_through_the_media_endpoint(
    simulator: WhatsAppSimulator, sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    """The webhook names the medium; its id, MIME type and SHA-256 are in the event; the
    connector looks the URL up and downloads the bytes with the same token."""
    media_id = simulator.add_media(PICTURE, "image/png")
    body = whatsapp_media_message(
        from_=TO,
        media_id=media_id,
        mime_type="image/png",
        sha256=hashlib.sha256(PICTURE).hexdigest(),
        caption="the cake I want",
        phone_number_id=PHONE,
    )
    (event,) = parse_whatsapp(json.dumps(body).encode())
    assert (event.topic, event.text) == ("image", "the cake I want")
    assert event.data["media_id"] == media_id
    assert event.data["mime_type"] == "image/png"

    media = await whatsapp.download_media(event.data["media_id"])
    assert media.content == PICTURE
    assert (media.mime_type, media.size) == ("image/png", len(PICTURE))
    lookup, download = sandbox.requests
    assert lookup.path == f"/whatsapp/v21.0/{media_id}"
    assert download.headers["authorization"] == f"Bearer {TOKEN}"

    with pytest.raises(InvalidRequestError):
        await whatsapp.download_media("1234")


async def test_mark_read_with_the_typing_indicator(
    simulator: WhatsAppSimulator, sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    await whatsapp.mark_read("wamid.one")
    await whatsapp.mark_read("wamid.two", typing=True)
    assert simulator.read_receipts == [("wamid.one", False), ("wamid.two", True)]
    assert sandbox.requests[-1].json() == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.two",
        "typing_indicator": {"type": "text"},
    }
    assert sandbox.effects("whatsapp") == []  # a receipt is no message


@pytest.mark.parametrize(("mode", "expected"), [("typing", True), ("read", False), (None, None)])
async def test_processed_messages_are_marked_read_as_the_tenant_says(
    tmp_path: Path,
    simulator: WhatsAppSimulator,
    sandbox: ProviderSandbox,
    mode: str | None,
    expected: bool | None,
) -> None:
    """The service marks each WhatsApp message it processes read (with the typing indicator
    for ``typing``) before it answers; without the setting it marks nothing."""
    tenant = Tenant(id="acme", whatsapp_phone_number_id=PHONE, whatsapp_read_receipts=mode)
    connectors = Connectors(
        base_urls={"whatsapp": sandbox.base_url("whatsapp")},
        options={"whatsapp": {"access_token": TOKEN, "phone_number_id": PHONE}},
    )
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", tenants={"acme": tenant})
    event = InboundEvent(
        Channel.WHATSAPP, "wamid.in-1", EventKind.MESSAGE, PHONE, sender=TO, text="Hello"
    )
    async with Assistant(settings, connectors=connectors) as assistant:
        await assistant.ingest([event])
        await assistant.worker().run_until_idle()
    await connectors.aclose()
    wanted = [] if expected is None else [("wamid.in-1", expected)]
    assert simulator.read_receipts == wanted
    (reply,) = sandbox.effects("whatsapp")  # and the flow's greeting went out
    assert reply.data["to"] == TO
