"""A customer's messages are processed one at a time, in the order they arrived, whichever
worker takes them -- while different customers' messages run concurrently -- and a worker that
dies holding a message does not let the customer's next message overtake it.

The order is the job queue's (each message's job carries its tenant's and sender's ordering key),
decided when a job is claimed. Real SQLite queue shared by two assistants (two connections, as
two processes would have), real workers, WhatsApp through the sandbox over HTTP. Processing is
observed by wrapping each assistant's pipeline: every run is recorded when it starts and ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.inbound._pipeline import sender_ordering_key
from antifragile.inbound._sessions import advance
from antifragile.jobs import JobContext, JobFilter, JobState, Worker
from antifragile.sandbox import ProviderSandbox
from antifragile.service import Assistant, Settings
from tests.acceptance.test_service_e2e import PHONE_ID, sandbox_env, simulators

PROCESS = "inbound.process"


def message(sender: str, n: int) -> InboundEvent:
    return InboundEvent(
        Channel.WHATSAPP,
        f"wamid.{sender}.{n}",
        EventKind.MESSAGE,
        PHONE_ID,
        sender=sender,
        text=f"message {n}",
    )


class Runs:
    """What the wrapped pipelines ran: ``("start" | "end", inbox id)`` in the order it
    happened, and the largest number of runs in flight at once."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def watch(self, assistant: Assistant) -> None:
        pipeline = assistant.pipeline
        original = pipeline.process

        async def process(ctx: JobContext, inbox_id: str) -> Any:
            self.log.append(("start", inbox_id))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.02)  # a slow classifier: the next message could overtake
                return await original(ctx, inbox_id)
            finally:
                self.in_flight -= 1
                self.log.append(("end", inbox_id))

        pipeline.process = process  # type: ignore[method-assign]


@asynccontextmanager
async def assistants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> AsyncIterator[list[Assistant]]:
    """*count* assistants on one SQLite database, with the sandbox's providers."""
    with ProviderSandbox(simulators()) as sandbox:
        for name, value in sandbox_env(sandbox).items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env({"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
        async with AsyncExitStack() as stack:
            yield [await stack.enter_async_context(Assistant(settings)) for _ in range(count)]


async def run_until_processed(workers: list[Worker], assistant: Assistant, total: int) -> None:
    """Run *workers* until *total* processing jobs succeeded (giving up after a minute)."""
    running = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        for _ in range(1200):
            done = await assistant.jobs.find(
                JobFilter(name=PROCESS, states=(JobState.SUCCEEDED,)), limit=total + 1
            )
            if len(done) >= total:
                break
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*running)


async def test_each_senders_messages_run_one_at_a_time_in_arrival_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six senders' messages, four each, arrive interleaved; two workers on separate
    connections process them concurrently -- several at once -- yet each sender's messages
    start only after the previous one ended, in the order they arrived."""
    senders = [f"4477009006{n:02d}" for n in range(6)]
    async with assistants(tmp_path, monkeypatch, 2) as (first, second):
        runs = Runs()
        runs.watch(first)
        runs.watch(second)
        sender_of: dict[str, str] = {}
        arrived: dict[str, list[str]] = defaultdict(list)
        for n in range(4):
            for sender in senders:
                (recorded,) = await first.ingest([message(sender, n)])
                sender_of[recorded.id] = sender
                arrived[sender].append(recorded.id)
        workers = [
            first.worker(concurrency=8, poll_interval=0.02),
            second.worker(concurrency=8, poll_interval=0.02),
        ]
        await run_until_processed(workers, first, len(sender_of))

    per_sender: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for event, inbox_id in runs.log:
        per_sender[sender_of[inbox_id]].append((event, inbox_id))
    for sender in senders:
        expected = [(event, i) for i in arrived[sender] for event in ("start", "end")]
        assert per_sender[sender] == expected, sender
    assert runs.most_in_flight > 1  # different senders did run at the same time


async def test_a_worker_killed_after_its_claim_does_not_let_the_next_message_overtake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims a sender's first message and dies before processing it (its lease runs
    out). The sender's second message, ready at once, waits: a live worker replays the first
    when the lease expires, then processes the second; the first's history shows the lost
    run."""
    sender = "447700900777"
    async with assistants(tmp_path, monkeypatch, 1) as (assistant,):
        runs = Runs()
        runs.watch(assistant)
        (one,) = await assistant.ingest([message(sender, 1)])
        (two,) = await assistant.ingest([message(sender, 2)])
        queue = assistant.jobs.queue
        now = assistant.clock.time()
        claimed = await queue.claim(worker="killed", limit=5, lease=1.0, now=now)
        assert [job.id for job in claimed] == [one.job_id]  # the second waits for the first
        assert claimed[0].ordering_key == sender_ordering_key("default", sender)
        worker = assistant.worker(concurrency=8, poll_interval=0.02)
        await run_until_processed([worker], assistant, 2)
        replayed = await assistant.jobs.get(str(one.job_id))
    assert runs.log == [("start", one.id), ("end", one.id), ("start", two.id), ("end", two.id)]
    assert replayed is not None
    assert replayed.state is JobState.SUCCEEDED
    assert replayed.history[0]["code"] == "LEASE_EXPIRED"


async def test_a_senders_ordering_key_is_a_hash_not_the_phone_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message's job carries its tenant's and sender's ordering key, in which the phone
    number does not appear; a delivery status has no key."""
    sender = "447700900888"
    async with assistants(tmp_path, monkeypatch, 1) as (assistant,):
        (recorded,) = await assistant.ingest([message(sender, 1)])
        job = await assistant.jobs.get(str(recorded.job_id))
        status = InboundEvent(
            Channel.WHATSAPP, "wamid.status-1", EventKind.STATUS, PHONE_ID, sender=sender
        )
        (recorded_status,) = await assistant.ingest([status])
        status_job = await assistant.jobs.get(str(recorded_status.job_id))
    assert job is not None
    assert job.ordering_key is not None
    assert sender not in job.ordering_key
    assert job.ordering_key == sender_ordering_key("default", sender)
    assert status_job is not None
    assert status_job.ordering_key is None


async def test_each_senders_replies_answer_their_messages_in_order_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight senders' messages, five each, arrive interleaved and are processed by two workers
    at once (their store operations sharing commits). Every message is answered by a reply
    written with its session's turn, and each sender's replies are what the flow says to
    those messages in arrival order (the flow's own turns, replayed here one by one)."""
    senders = [f"4477009007{n:02d}" for n in range(8)]
    texts = ["Hello", "Ada Lovelace", "not an email", "ada@example.com", "A cake"]
    async with assistants(tmp_path, monkeypatch, 2) as (first, second):
        arrived: dict[str, list[tuple[str, InboundEvent]]] = defaultdict(list)
        for n, text in enumerate(texts):
            for sender in senders:
                event = dataclasses.replace(message(sender, n), text=text)
                (recorded,) = await first.ingest([event])
                arrived[sender].append((str(recorded.job_id), event))
        workers = [
            first.worker(concurrency=10, poll_interval=0.02),
            second.worker(concurrency=10, poll_interval=0.02),
        ]
        await run_until_processed(workers, first, len(senders) * len(texts))
        tenant = first.tenants[0]
        flow = first.sessions.flow_for(tenant)
        assert flow is not None
        answered: dict[str, list[str]] = defaultdict(list)
        expected: dict[str, list[str]] = defaultdict(list)
        for sender in senders:
            record = None
            for job_id, event in arrived[sender]:
                job = await first.jobs.get(job_id)
                assert job is not None
                assert job.result is not None
                assert job.result["handler"] == "session"
                stored = await first.replies.get(str(job.result["reply_message"]))
                assert stored is not None
                answered[sender].append(str(stored["text"]))
                key = first.sessions.key_for(tenant.id, sender)
                record, turn = advance(record, flow, tenant, event, key=key, now=0.0)
                assert turn is not None
                expected[sender].append(turn.reply)
        replies = await first.jobs.find(JobFilter(name="replies.send"), limit=1000)
    assert answered == expected
    assert len(replies) == len(senders) * len(texts)
