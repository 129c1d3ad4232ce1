"""One sender's messages are never processed by two workers at once: a worker that finds the
sender's lease held by another defers the message (no attempt counted) and takes it once the
other lets go. Real SQLite queue, real worker, WhatsApp through the sandbox over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.jobs import JobFilter, JobState
from antifragile.sandbox import ProviderSandbox
from antifragile.service import Assistant, Settings
from tests._waiting import eventually
from tests.acceptance.test_service_e2e import PHONE_ID, sandbox_env, simulators

SENDER = "447700900555"


async def test_a_sender_held_by_another_worker_is_deferred_then_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another worker holds the sender's lease, the message waits (deferred, attempts
    unchanged, nothing sent); once the lease is released it is answered exactly once."""
    with ProviderSandbox(simulators()) as sandbox:
        for name, value in sandbox_env(sandbox).items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env({"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
        async with Assistant(settings) as assistant:
            event = InboundEvent(
                Channel.WHATSAPP,
                "wamid.order-1",
                EventKind.MESSAGE,
                PHONE_ID,
                sender=SENDER,
                text="Hello there",
            )
            leases = assistant.jobs.queue.store.leases
            name = f"inbound:default:{hashlib.sha256(SENDER.encode()).hexdigest()[:24]}"
            held = await leases.acquire(name, owner="another-worker", now=time.time(), ttl=60)
            assert held is not None
            (recorded,) = await assistant.ingest([event])
            worker = assistant.worker(poll_interval=0.02)
            running = asyncio.create_task(worker.run())
            await eventually(lambda: worker.counts["defer"] >= 1)  # it tried, and deferred
            job = await assistant.jobs.get(str(recorded.job_id))
            assert job is not None
            assert job.state is JobState.QUEUED
            assert job.attempts == 0
            assert sandbox.effects("whatsapp") == []
            assert await leases.release(name, owner="another-worker")
            await eventually(lambda: bool(sandbox.effects("whatsapp")), interval=0.05)
            worker.stop()
            await running
            job = await assistant.jobs.get(str(recorded.job_id))
            assert job is not None
            assert job.state is JobState.SUCCEEDED
            assert len(sandbox.effects("whatsapp")) == 1
            assert await leases.holder(name, now=time.time()) is None  # let go after the job
            done = await assistant.jobs.find(JobFilter(name="inbound.process"))
            assert len(done) == 1
