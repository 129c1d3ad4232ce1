"""Inbound WhatsApp media downloaded automatically, for the tenants that ask: the service
against the sandbox's Cloud API simulator over real HTTP, a SQLite job database and a media
directory on disk.

Time is a FakeClock: the connector's back-offs and the jobs' retry delays are advanced, not
waited out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile import FakeClock
from antifragile.connectors import Connectors, WhatsAppMedia
from antifragile.inbound import InboundEvent, Tenant, parse_whatsapp
from antifragile.jobs import JobFilter, JobState
from antifragile.sandbox import (
    ProviderFault,
    ProviderSandbox,
    WhatsAppSimulator,
    whatsapp_media_message,
)
from antifragile.service import Settings
from antifragile.service._assistant import Assistant

TOKEN = "EAAG-media-token"
PHONE = "106540352242922"
CONTACT = "447700900123"
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
DOWNLOAD = "GET /_media/{media_id}"
MEDIA_JOBS = JobFilter(name="whatsapp.media")


@pytest.fixture
def simulator(clock: FakeClock) -> WhatsAppSimulator:
    return WhatsAppSimulator(access_tokens=[TOKEN], phone_number_ids=[PHONE], clock=clock.monotonic)


@pytest.fixture
def sandbox(simulator: WhatsAppSimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connectors(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connectors]:
    made = Connectors(
        base_urls={"whatsapp": sandbox.base_url("whatsapp")},
        options={"whatsapp": {"access_token": TOKEN, "phone_number_id": PHONE}},
        clock=clock,
    )
    yield made
    await made.aclose()


def media_event(simulator: WhatsAppSimulator, content: bytes = PICTURE) -> InboundEvent:
    """The parsed webhook of a contact's image, its bytes stored in the simulator."""
    media_id = simulator.add_media(content, "image/png")
    body = whatsapp_media_message(
        from_=CONTACT,
        media_id=media_id,
        mime_type="image/png",
        sha256=hashlib.sha256(content).hexdigest(),
        caption="my order, by Ada",
        filename="ada-lovelace.png",
        phone_number_id=PHONE,
    )
    (event,) = parse_whatsapp(json.dumps(body).encode())
    return event


def settings_for(tmp_path: Path, media: str | None = "on", **values: Any) -> Settings:
    tenant = Tenant(id="acme", whatsapp_phone_number_id=PHONE, whatsapp_media_download=media)
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'service.db'}",
        tenants={"acme": tenant},
        **{"whatsapp_media_dir": tmp_path / "media", **values},
    )


async def media_job(assistant: Assistant) -> Any:
    (job,) = await assistant.jobs.find(MEDIA_JOBS, limit=10)
    return job


async def test_an_inbound_image_is_downloaded_checked_and_stored(
    tmp_path: Path,
    simulator: WhatsAppSimulator,
    sandbox: ProviderSandbox,
    connectors: Connectors,
    clock: FakeClock,
) -> None:
    """For a tenant with ``whatsapp_media_download = "on"``, processing the image message
    enqueues ``whatsapp.media``; it looks the URL up, downloads it with the bearer token and
    stores the checked bytes as ``{dir}/acme/{sha256}.png``. Its payload holds references only
    -- no phone number, caption or file name -- and a second processing adds no job."""
    event = media_event(simulator)
    async with Assistant(settings_for(tmp_path), connectors=connectors, clock=clock) as assistant:
        await assistant.ingest([event])
        await assistant.worker().run_until_idle()
        job = await media_job(assistant)
        await assistant.ingest([event])  # a redelivery: deduplicated by the inbox
        await assistant.worker().run_until_idle()
        assert len(await assistant.jobs.find(MEDIA_JOBS, limit=10)) == 1
    digest = hashlib.sha256(PICTURE).hexdigest()
    stored = tmp_path / "media" / "acme" / f"{digest}.png"
    assert stored.read_bytes() == PICTURE
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no partial file left
    assert job.state is JobState.SUCCEEDED
    assert job.result == {
        "status": "downloaded",
        "sha256": digest,
        "size": len(PICTURE),
        "mime_type": "image/png",
        "stored": f"acme/{digest}.png",
    }
    payload = json.dumps(job.payload)
    for personal in (CONTACT, "Ada", "ada-lovelace"):
        assert personal not in payload
    media_requests = [r for r in sandbox.requests if r.method == "GET"]
    lookup, download = media_requests
    assert lookup.path == f"/whatsapp/v21.0/{event.data['media_id']}"
    assert download.path == f"/whatsapp/_media/{event.data['media_id']}"
    assert download.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("media", [None, "off"])
async def test_a_tenant_that_does_not_ask_gets_no_download(
    tmp_path: Path,
    simulator: WhatsAppSimulator,
    sandbox: ProviderSandbox,
    connectors: Connectors,
    clock: FakeClock,
    media: str | None,
) -> None:
    """Downloads are opt-in: without the tenant's setting the medium is recorded, never
    fetched."""
    async with Assistant(
        settings_for(tmp_path, media), connectors=connectors, clock=clock
    ) as assistant:
        await assistant.ingest([media_event(simulator)])
        await assistant.worker().run_until_idle()
        assert await assistant.jobs.find(MEDIA_JOBS, limit=10) == []
    assert [r for r in sandbox.requests if r.method == "GET"] == []
    assert not (tmp_path / "media").exists()


async def test_a_medium_over_the_limit_is_refused_before_the_download(
    tmp_path: Path,
    simulator: WhatsAppSimulator,
    sandbox: ProviderSandbox,
    connectors: Connectors,
    clock: FakeClock,
) -> None:
    """The lookup's ``file_size`` is over ``whatsapp_media_max_bytes``: the job goes to the
    dead-letter queue at once (a refusal is not retried), the URL is never fetched and
    nothing is written."""
    settings = settings_for(tmp_path, whatsapp_media_max_bytes=1000)
    async with Assistant(settings, connectors=connectors, clock=clock) as assistant:
        await assistant.ingest([media_event(simulator)])
        await assistant.worker().run_until_idle()
        job = await media_job(assistant)
    assert job.state is JobState.DEAD
    assert job.attempts == 1
    assert "over the limit of 1000" in (job.last_error or "")
    assert [r.path.split("/")[2] for r in sandbox.requests if r.method == "GET"] == ["v21.0"]
    assert not any((tmp_path / "media").rglob("*.png"))


@pytest.mark.parametrize("kind", ["5xx", "reset", "malformed"])
async def test_a_failed_download_is_retried_until_the_checked_bytes_are_stored(
    tmp_path: Path,
    simulator: WhatsAppSimulator,
    sandbox: ProviderSandbox,
    connectors: Connectors,
    clock: FakeClock,
    kind: str,
) -> None:
    """The download fails (a 5xx, a reset, bytes that do not match the SHA-256)
    for longer than the connector's own attempts: the job fails, is retried later with
    back-off (the clock advanced past it) and stores the right bytes -- once."""
    faults = {
        "5xx": ProviderFault.error(503),
        "reset": ProviderFault.reset(),
        "malformed": ProviderFault.malformed(),
    }
    sandbox.faults("whatsapp", DOWNLOAD, script=[faults[kind]] * 30)
    async with Assistant(settings_for(tmp_path), connectors=connectors, clock=clock) as assistant:
        await assistant.ingest([media_event(simulator)])
        await assistant.worker().run_until_idle()
        first = await media_job(assistant)
        assert first.state is JobState.RETRYING  # waiting for its next attempt
        assert first.attempts == 1
        sandbox.faults("whatsapp", DOWNLOAD)  # the provider recovers
        clock.advance(3600.0)
        await assistant.worker().run_until_idle()
        job = await media_job(assistant)
    assert job.state is JobState.SUCCEEDED
    assert job.attempts == 2
    stored = list((tmp_path / "media" / "acme").iterdir())
    assert [p.read_bytes() for p in stored] == [PICTURE]


async def test_a_hook_takes_the_medium_instead_of_the_directory(
    tmp_path: Path, simulator: WhatsAppSimulator, connectors: Connectors, clock: FakeClock
) -> None:
    """``@assistant.on_whatsapp_media`` receives the downloaded medium, the event and the
    tenant; nothing is written to disk."""
    taken: list[tuple[WhatsAppMedia, InboundEvent, Tenant]] = []
    settings = settings_for(tmp_path, whatsapp_media_dir=None)
    async with Assistant(settings, connectors=connectors, clock=clock) as assistant:

        @assistant.on_whatsapp_media
        async def keep(media: WhatsAppMedia, event: InboundEvent, tenant: Tenant) -> None:
            taken.append((media, event, tenant))

        await assistant.ingest([media_event(simulator)])
        await assistant.worker().run_until_idle()
        job = await media_job(assistant)
    ((media, event, tenant),) = taken
    assert media.content == PICTURE
    assert (event.sender, tenant.id) == (CONTACT, "acme")
    assert job.result["stored"] == "hook"
    assert not (tmp_path / "media").exists()


def test_the_media_url_needs_the_token_and_expires_after_five_minutes(
    simulator: WhatsAppSimulator, sandbox: ProviderSandbox, clock: FakeClock
) -> None:
    """The simulator's media endpoint: ``file_size`` is a string; the URL serves the bytes
    only to the bearer token, and only for 300 seconds (then 404 code 100)."""
    media_id = simulator.add_media(PICTURE, "image/png")
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=10.0) as http:
        info = http.get(f"{sandbox.base_url('whatsapp')}/v21.0/{media_id}", headers=auth).json()
        url = info["url"]
        anonymous = http.get(url)
        fresh = http.get(url, headers=auth)
        clock.advance(301.0)
        stale = http.get(url, headers=auth)
    assert info["file_size"] == str(len(PICTURE))
    assert info["sha256"] == hashlib.sha256(PICTURE).hexdigest()
    assert anonymous.status_code == 401
    assert fresh.content == PICTURE
    assert stale.status_code == 404
    assert stale.json()["error"]["code"] == 100
