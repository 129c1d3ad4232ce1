"""Conversation turns per second: ``Sessions.handle`` taking contacts through the intake flow.

Each contact sends five messages (the greeting, then the four answers); the fifth completes its
session, which writes the record and enqueues the flow's four action jobs in one transaction.
The sessions run in this process on a fresh SQLite file (the service's defaults: WAL,
``synchronous=FULL``), with every provider "configured" so that no action is skipped; no worker
runs, so only the turns are measured. To compare two versions, run the script with each one's
``src`` first on ``PYTHONPATH``::

    python -m benchmarks.sessions --contacts 200
    PYTHONPATH=/path/to/other/src python -m benchmarks.sessions --contacts 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

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
from antifragile.jobs import JobFilter, Jobs

TENANT = Tenant("acme", whatsapp_phone_number_id="1", owner_email="owner@acme.example")
MESSAGES = ["Hello", "Ada Lovelace", "ada@example.com", "A cake for 20", "weekday mornings"]


class Configured:
    """Connectors that say every provider is configured (no call is made: no worker runs)."""

    def configured(self, provider: str) -> bool:
        return True


async def run(contacts: int) -> None:
    folder = Path(tempfile.mkdtemp())
    clock = FakeClock()
    jobs = Jobs(database_url=f"sqlite:///{folder / 'sessions.db'}", clock=clock)
    connectors = Configured()
    sessions = Sessions(
        jobs,
        connectors,  # type: ignore[arg-type]
        {"intake": DEFAULT_FLOW},
        tenants={TENANT.id: TENANT},
        replies=Replies(jobs, connectors),  # type: ignore[arg-type]
    )
    async with jobs:
        completed = 0
        started = time.perf_counter()
        for contact in range(contacts):
            for n, text in enumerate(MESSAGES):
                event = InboundEvent(
                    Channel.WHATSAPP,
                    f"wamid.{contact}.{n}",
                    EventKind.MESSAGE,
                    "1",
                    sender=f"4477009{contact:05d}",
                    text=text,
                )
                turn = await sessions.handle(TENANT, event)
                completed += bool(turn is not None and turn.completed)
        elapsed = time.perf_counter() - started
        enqueued = len(await jobs.find(JobFilter(), limit=10 * contacts))
    messages = contacts * len(MESSAGES)
    print(
        f"{contacts} contacts, {messages} messages: {elapsed:.2f} s, "
        f"{messages / elapsed:.0f} messages/s; {completed} completed, {enqueued} jobs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200)
    asyncio.run(run(parser.parse_args().contacts))


if __name__ == "__main__":
    main()
