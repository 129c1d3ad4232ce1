"""One conversation turn in a process of its own, for the crash test of ``test_sessions.py``.

``python -m tests.integration._session_turn <postgres url> <schema> <now> <sender> <event id>
<text>`` handles one WhatsApp message of *sender* through the default intake flow of the tenant
``acme``, on the PostgreSQL job database in *schema*, at *now* (the reading of the test's
FakeClock), then exits. The test kills it while the turn's transaction is held up inside the
database.
"""

from __future__ import annotations

import asyncio
import sys

from antifragile import FakeClock
from antifragile.inbound import (
    DEFAULT_FLOW,
    Channel,
    EventKind,
    InboundEvent,
    Replies,
    Sessions,
    Tenant,
)
from antifragile.jobs import Jobs
from antifragile.jobs._postgres import PostgresJobQueue
from antifragile.stores._postgres import PostgresStore

TENANT = Tenant("acme", whatsapp_phone_number_id="106540352242922", owner_email="o@acme.example")


class Configured:
    """Every provider configured; no call is made here (no worker runs in this process)."""

    def configured(self, provider: str) -> bool:
        return True


async def turn(url: str, schema: str, now: str, sender: str, event_id: str, text: str) -> None:
    clock = FakeClock(float(now))  # the same FakeClock reading as the test's
    store = PostgresStore(url, schema=schema, clock=clock)
    await store.open()
    try:
        jobs = Jobs(queue=PostgresJobQueue(store), clock=clock)
        connectors = Configured()
        sessions = Sessions(
            jobs,
            connectors,  # type: ignore[arg-type]
            {"intake": DEFAULT_FLOW},
            tenants={TENANT.id: TENANT},
            replies=Replies(jobs, connectors),  # type: ignore[arg-type]
        )
        event = InboundEvent(
            Channel.WHATSAPP,
            event_id,
            EventKind.MESSAGE,
            TENANT.whatsapp_phone_number_id or "",
            sender=sender,
            text=text,
        )
        async with jobs:
            await sessions.handle(TENANT, event)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(turn(*sys.argv[1:7]))
