"""A small stand-in for the service's assistant, for the app's own tests.

It records inbound events exactly as the service does -- real :class:`Jobs` on a real SQLite
file, ``record_inbound`` with one job per new event in the same transaction -- but processes
nothing, so the tests of the HTTP layer (envelope, webhooks, health) do not depend on the
message pipeline. Breakers are whatever the test puts in ``breakers_by_name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from antifragile.inbound._model import InboundEvent
from antifragile.jobs import (
    JobContext,
    Jobs,
    NewInboxEntry,
    Recorded,
    Scheduler,
    Worker,
    new_job_id,
)
from antifragile.policies import SYSTEM_CLOCK, CircuitBreaker, Clock
from antifragile.service._settings import Settings
from antifragile.stores import Store, open_store


class StandInAssistant:
    """Records inbound events with their jobs; see the module docs."""

    def __init__(
        self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, limiter: Any = None
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.clock = clock
        self.jobs = Jobs(database_url=settings.database_url, clock=clock)
        self.breakers_by_name: dict[str, CircuitBreaker] = {}
        self.processed: list[str] = []
        self.opened = 0
        self.closed = 0
        self.workers: list[Worker] = []
        self.schedulers: list[Scheduler] = []
        #: the Redis store when configured and reachable (as the assistant's ``state_store``)
        self.state_store: Store | None = None
        processed = self.processed

        @self.jobs.job(name="inbound.process", queue="inbound")
        async def process(ctx: JobContext, inbox_id: str) -> None:
            processed.append(inbox_id)

        self._process = process

    async def open(self) -> None:
        self.opened += 1
        await self.jobs.open()
        if self.settings.redis_url and self.state_store is None:
            with contextlib.suppress(Exception):  # unreachable: /health reports it down
                self.state_store = await asyncio.wait_for(open_store(self.settings.redis_url), 5)

    async def close(self) -> None:
        self.closed += 1
        store, self.state_store = self.state_store, None
        if store is not None:
            await store.close()
        await self.jobs.close()

    async def ingest(
        self, events: Sequence[InboundEvent], *, request_id: str | None = None
    ) -> list[Recorded]:
        entries = []
        for event in events:
            entry_id = new_job_id()
            entries.append(
                NewInboxEntry(
                    channel=event.channel.value,
                    event_id=event.event_id,
                    kind=event.kind.value,
                    tenant_key=event.tenant_key,
                    payload=event.to_json(),
                    ttl=self.settings.inbox_ttl,
                    job=self._process.configure(idempotency_key=f"inbound:{entry_id}").prepare(
                        entry_id
                    ),
                    id=entry_id,
                    request_id=request_id,
                )
            )
        return await self.jobs.queue.record_inbound(entries, now=self.clock.time())

    def worker(self, **options: Any) -> Worker:
        options.setdefault("poll_interval", 0.02)
        options.setdefault("shutdown_grace", 2.0)
        worker = self.jobs.worker(**options)
        self.workers.append(worker)
        return worker

    def scheduler(self, **options: Any) -> Scheduler:
        scheduler = Scheduler(self.jobs, **options)
        self.schedulers.append(scheduler)
        return scheduler

    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self.breakers_by_name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(app: FastAPI, *, timeout: float = 60.0) -> Iterator[str]:
    """Serve *app* with uvicorn in a thread on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", log_config=None
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def run(coro: Any) -> Any:
    """Run *coro* on a fresh event loop (from a sync test)."""
    return asyncio.run(coro)
