"""Inbound WhatsApp media, downloaded automatically: one durable job per medium.

A contact's image, document, audio, video or sticker arrives as a message whose event names
the medium (``data["media_id"]``, ``mime_type``, ``sha256``); the bytes stay at Meta until they
are fetched through the media endpoint, and a media id from a webhook works for 7 days. For a
tenant that opts in (``whatsapp_media_download = "on"``), :class:`MediaDownloads` fetches every
such medium as the job ``whatsapp.media``::

    lookup (GET /{version}/{media_id}: URL, file_size, sha256)
      -> file_size over the limit: refused before downloading (dead-letter queue, not retried)
      -> download with the same bearer token, the bytes checked against sha256
      -> handed to the hook, if one is set; else written to
         {directory}/{tenant}/{sha256}{extension} (a temporary file renamed into place: never
         half written; a medium already there is not written again)

The job's payload holds references only -- the inbox id and the tenant id -- never the phone
number, the caption or the file name: the job reads the media id from the inbox record. A
transient failure (the provider down, a reset, a checksum mismatch) is retried with back-off
(:data:`MEDIA_RETRY`, within the media id's 7 days); a refusal (an expired or unknown media
id, a medium over the limit) is not. The job is idempotent by the inbox id: processing the
message again enqueues no second download.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from antifragile.errors import ConfigurationError, PermanentError
from antifragile.inbound._model import Channel, EventKind, InboundEvent, Tenant
from antifragile.jobs import JobContext, Jobs
from antifragile.policies import Exponential, Retry

_log = logging.getLogger("antifragile.inbound")

#: the job that downloads one inbound medium
MEDIA_JOB = "whatsapp.media"
#: the message types whose object names a medium
MEDIA_TYPES = frozenset({"image", "document", "audio", "video", "sticker"})
#: the largest medium downloaded by default (bytes): Cloud API's limit for audio and video
DEFAULT_MEDIA_MAX_BYTES = 16 * 1024 * 1024
#: 8 attempts, back-off from 30 s to 1 h: about 4 hours, well within a media id's 7 days
MEDIA_RETRY = Retry(attempts=8, backoff=Exponential(30.0, cap=3600.0))

#: what a tenant's ``whatsapp_media_download`` says to turn downloads on
_ON = frozenset({"on", "true", "yes", "1"})
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,10}$")

#: ``async def hook(media, event, tenant)``: takes the downloaded medium instead of the
#: directory (the event has the sender and the caption; keep personal data where it belongs)
MediaHook = Callable[[Any, InboundEvent, Tenant], Awaitable[None]]


def downloads_media(tenant: Tenant) -> bool:
    """Whether *tenant* asked for its contacts' WhatsApp media to be downloaded."""
    return (tenant.whatsapp_media_download or "").strip().lower() in _ON


class MediaDownloads:
    """Downloads inbound WhatsApp media as durable jobs (see the module docs).

    *directory* is where media are stored (a folder per tenant), *hook* takes them instead;
    without either, nothing is downloaded. *max_bytes* is the largest medium fetched;
    *tenants* resolves the tenant id in a job's payload (for the hook).
    """

    def __init__(
        self,
        jobs: Jobs,
        connectors: Any,
        *,
        directory: Path | str | None = None,
        hook: MediaHook | None = None,
        max_bytes: int = DEFAULT_MEDIA_MAX_BYTES,
        tenants: Collection[Tenant] = (),
        retry: Retry = MEDIA_RETRY,
    ) -> None:
        if max_bytes < 1:
            raise ConfigurationError("max_bytes must be >= 1")
        self.jobs = jobs
        self.connectors = connectors
        self.directory = None if directory is None else Path(directory)
        self.hook = hook
        self.max_bytes = int(max_bytes)
        self.tenants = {tenant.id: tenant for tenant in tenants}

        async def download_media(ctx: JobContext, inbox_id: str, tenant: str) -> dict[str, Any]:
            """Download the medium of the inbox entry *inbox_id* for *tenant*."""
            return await self._download(inbox_id, tenant)

        self.job = jobs.job(MEDIA_JOB, retry=retry, timeout=300.0, provider="whatsapp")(
            download_media
        )

    def wanted(self, event: InboundEvent, tenant: Tenant) -> bool:
        """Whether *event* carries a medium this service downloads for *tenant*."""
        return (
            (self.directory is not None or self.hook is not None)
            and event.channel is Channel.WHATSAPP
            and event.kind is EventKind.MESSAGE
            and event.topic in MEDIA_TYPES
            and isinstance(event.data.get("media_id"), str)
            and downloads_media(tenant)
        )

    async def enqueue(self, event: InboundEvent, tenant: Tenant, inbox_id: str) -> str | None:
        """Enqueue the download of *event*'s medium (once per inbox entry); the job's id, or
        ``None`` when there is nothing to download."""
        if not self.wanted(event, tenant):
            return None
        self.tenants.setdefault(tenant.id, tenant)
        enqueued = await self.job.configure(idempotency_key=f"media:{inbox_id}").enqueue(
            inbox_id=inbox_id, tenant=tenant.id
        )
        return enqueued.id

    async def _download(self, inbox_id: str, tenant_id: str) -> dict[str, Any]:
        entry = await self.jobs.queue.get_inbound(inbox_id)
        if entry is None:
            return {"status": "missing", "detail": "the inbox entry has expired"}
        event = InboundEvent.from_json(entry.payload)
        media_id = event.data.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            return {"status": "no_media"}
        media = await self.connectors.whatsapp.download_media(media_id, max_bytes=self.max_bytes)
        result: dict[str, Any] = {
            "status": "downloaded",
            "sha256": media.sha256,
            "size": media.size,
            "mime_type": media.mime_type,
        }
        if self.hook is not None:
            tenant = self.tenants.get(tenant_id) or Tenant(id=tenant_id)
            await self.hook(media, event, tenant)
            result["stored"] = "hook"
            return result
        assert self.directory is not None
        name = await asyncio.to_thread(self._store, media, tenant_id, event)
        result["stored"] = name
        return result

    def _store(self, media: Any, tenant_id: str, event: InboundEvent) -> str:
        """Write *media* to ``{directory}/{tenant}/{sha256}{extension}`` atomically; the path
        relative to the directory."""
        assert self.directory is not None
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", tenant_id) or tenant_id.startswith("."):
            raise PermanentError(
                "the tenant id is not a safe folder name", provider="whatsapp", operation="store"
            )
        digest = media.sha256 or _sha256(media.content)
        folder = self.directory / tenant_id
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{digest}{_extension(media.mime_type, event.data.get('filename'))}"
        if target.exists() and target.stat().st_size == media.size:
            return str(target.relative_to(self.directory))  # stored by an earlier attempt
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(media.content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _log.info("stored a WhatsApp medium", extra={"tenant": tenant_id, "bytes": media.size})
        return str(target.relative_to(self.directory))


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _extension(mime_type: str | None, filename: Any) -> str:
    """The file extension of a medium: from its MIME type, else its file name's (only the
    extension of the name is used: the name itself may say who sent it)."""
    base = (mime_type or "").partition(";")[0].strip().lower()
    guessed = mimetypes.guess_extension(base) if base else None
    if guessed and _EXTENSION.match(guessed):
        return guessed
    if isinstance(filename, str):
        suffix = Path(filename).suffix
        if _EXTENSION.match(suffix):
            return suffix.lower()
    return ".bin"
