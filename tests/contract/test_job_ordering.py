"""Contract: ordering keys -- a job with an ordering key never starts while a job enqueued
before it with the same key is unfinished (scheduled, queued, running, retrying), nor while a
job of its key runs under a live lease; a dead job lets its key go on.

Every test runs on each job-queue backend (memory, SQLite and PostgreSQL); the tests with
claimers on separate connections and in separate processes on SQLite and PostgreSQL. Time is a
FakeClock.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path

from antifragile import FakeClock
from antifragile.jobs import JobFilter, JobQueue, JobState, NewInboxEntry, NewJob, Outcome
from antifragile.jobs._open import open_job_queue
from antifragile.stores import open_store
from tests.contract.conftest import JobBackend
from tests.contract.test_job_queue import _run_claimers

LEASE = 30.0


def keyed(now: float, key: str | None, *, id: str, delay: float = 0.0, priority: int = 0) -> NewJob:
    return NewJob(
        name="answer",
        queue="inbound",
        payload={"id": id},
        run_at=now + delay,
        max_attempts=3,
        id=id,
        priority=priority,
        ordering_key=key,
    )


async def claim_ids(queue: JobQueue, now: float, worker: str = "w1", limit: int = 10) -> list[str]:
    return [j.id for j in await queue.claim(worker=worker, limit=limit, lease=LEASE, now=now)]


async def succeed(queue: JobQueue, job_id: str, now: float, worker: str = "w1") -> None:
    assert await queue.complete([Outcome(job_id, "succeeded")], worker=worker, now=now) == [job_id]


async def test_a_keyed_job_waits_for_the_earlier_job_of_its_key(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Of two jobs with one key, only the first is claimed -- even with the second's higher
    priority -- and the second once the first succeeded; both keep their key and place."""
    now = clock.time()
    await job_queue.enqueue(
        [keyed(now, "k", id="a1"), keyed(now, "k", id="a2", priority=10)], now=now
    )
    assert await claim_ids(job_queue, now) == ["a1"]
    assert await claim_ids(job_queue, now, worker="w2") == []
    await succeed(job_queue, "a1", now)
    assert await claim_ids(job_queue, now, worker="w2") == ["a2"]
    first, second = await job_queue.get("a1"), await job_queue.get("a2")
    assert first is not None
    assert second is not None
    assert first.ordering_key == second.ordering_key == "k"
    assert first.ordering_seq is not None
    assert second.ordering_seq is not None
    assert first.ordering_seq < second.ordering_seq


async def test_different_keys_and_unkeyed_jobs_run_concurrently(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """One claim takes the first job of every key and every unkeyed job at once."""
    now = clock.time()
    await job_queue.enqueue(
        [
            keyed(now, "a", id="a1"),
            keyed(now, "a", id="a2"),
            keyed(now, "b", id="b1"),
            keyed(now, None, id="n1"),
            keyed(now, "b", id="b2"),
            keyed(now, None, id="n2"),
        ],
        now=now,
    )
    assert sorted(await claim_ids(job_queue, now)) == ["a1", "b1", "n1", "n2"]


async def test_an_expired_lease_replays_the_earlier_job_before_the_later_one(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A worker dies holding a key's first job: the second waits while the lease lives, then
    the first is taken over and runs again, and the second only after it."""
    now = clock.time()
    await job_queue.enqueue([keyed(now, "k", id="a1"), keyed(now, "k", id="a2")], now=now)
    assert await claim_ids(job_queue, now, worker="dies") == ["a1"]
    assert await claim_ids(job_queue, now + LEASE - 1, worker="w2") == []
    later = now + LEASE + 1
    assert await claim_ids(job_queue, later, worker="w2") == ["a1"]
    assert await claim_ids(job_queue, later, worker="w3") == []
    await succeed(job_queue, "a1", later, worker="w2")
    assert await claim_ids(job_queue, later, worker="w3") == ["a2"]


async def test_a_retry_waiting_for_its_backoff_still_holds_the_key(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """The first job fails and waits 60 s for its next attempt; the second does not overtake
    it, nor when the first is deferred or released; it runs once the first succeeded."""
    now = clock.time()
    await job_queue.enqueue([keyed(now, "k", id="a1"), keyed(now, "k", id="a2")], now=now)
    await claim_ids(job_queue, now)
    retry = Outcome("a1", "retry", run_at=now + 60, error_code="http_500", error="failed")
    assert await job_queue.complete([retry], worker="w1", now=now) == ["a1"]
    assert await claim_ids(job_queue, now + 30) == []
    assert await claim_ids(job_queue, now + 61) == ["a1"]
    defer = Outcome("a1", "defer", run_at=now + 120)
    assert await job_queue.complete([defer], worker="w1", now=now + 61) == ["a1"]
    assert await claim_ids(job_queue, now + 90) == []
    assert await claim_ids(job_queue, now + 121) == ["a1"]
    assert await job_queue.complete([Outcome("a1", "release")], worker="w1", now=now + 121)
    assert await claim_ids(job_queue, now + 121) == ["a1"]
    await succeed(job_queue, "a1", now + 122)
    assert await claim_ids(job_queue, now + 122) == ["a2"]


async def test_a_scheduled_earlier_job_holds_the_key_until_it_ran(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A key's first job is due in a minute: its second, due now, waits for it."""
    now = clock.time()
    await job_queue.enqueue([keyed(now, "k", id="a1", delay=60), keyed(now, "k", id="a2")], now=now)
    assert await claim_ids(job_queue, now) == []
    assert await claim_ids(job_queue, now + 60) == ["a1"]


async def test_a_dead_job_lets_its_key_go_on_and_a_redriven_one_keeps_its_place(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """The first job dies: the second runs. Redriven while the second runs, the first waits for
    it (never two of a key at once), then runs before the third, which came after it."""
    now = clock.time()
    await job_queue.enqueue(
        [keyed(now, "k", id="a1"), keyed(now, "k", id="a2"), keyed(now, "k", id="a3")], now=now
    )
    await claim_ids(job_queue, now)
    dead = Outcome("a1", "dead", error_code="http_400", error="refused")
    assert await job_queue.complete([dead], worker="w1", now=now) == ["a1"]
    assert await claim_ids(job_queue, now) == ["a2"]
    assert await job_queue.redrive(JobFilter(ids=("a1",)), now=now) == 1
    assert await claim_ids(job_queue, now, worker="w2") == []
    await succeed(job_queue, "a2", now)
    assert await claim_ids(job_queue, now, worker="w2") == ["a1"]
    await succeed(job_queue, "a1", now, worker="w2")
    assert await claim_ids(job_queue, now, worker="w2") == ["a3"]


async def test_a_key_keeps_its_order_across_batches_and_enqueues(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Jobs of one key run in enqueue order: within a batch in batch order, and a later batch
    after an earlier one -- their ids' order does not matter."""
    now = clock.time()
    await job_queue.enqueue([keyed(now, "k", id="z"), keyed(now, "k", id="m")], now=now)
    await job_queue.enqueue([keyed(now, "k", id="a")], now=now)
    order: list[str] = []
    while got := await claim_ids(job_queue, now):
        assert len(got) == 1
        order.extend(got)
        await succeed(job_queue, got[0], now)
    assert order == ["z", "m", "a"]


async def test_inbound_jobs_keep_their_order_key(job_queue: JobQueue, clock: FakeClock) -> None:
    """Jobs recorded with inbound events carry their ordering key: one sender's events, in one
    batch or several, run one at a time in the order they were recorded."""
    now = clock.time()

    def entry(event_id: str, key: str) -> NewInboxEntry:
        return NewInboxEntry(
            channel="whatsapp",
            event_id=event_id,
            kind="message",
            tenant_key="t",
            payload={"text": event_id},
            ttl=3600,
            job=keyed(now, key, id=f"job-{event_id}"),
        )

    await job_queue.record_inbound([entry("e3", "s1"), entry("e1", "s2")], now=now)
    await job_queue.record_inbound([entry("e2", "s1")], now=now)
    assert sorted(await claim_ids(job_queue, now)) == ["job-e1", "job-e3"]
    await succeed(job_queue, "job-e3", now)
    assert await claim_ids(job_queue, now) == ["job-e2"]


async def _drain_in_order(
    queues: list[JobQueue], now: float, per_key: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Claimers on *queues* (several each) drain the queue: they fail at random (retry now),
    and check that no key ever has two jobs running. The order each key's jobs succeeded in."""
    running: dict[str, str] = {}
    done: dict[str, list[str]] = defaultdict(list)
    key_of = {job_id: key for key, ids in per_key.items() for job_id in ids}
    rng = random.Random(7)
    total = len(key_of)

    async def claimer(queue: JobQueue, worker: str) -> None:
        idle = 0
        while sum(len(ids) for ids in done.values()) < total and idle < 2000:
            jobs = await queue.claim(worker=worker, limit=3, lease=3600, now=now)
            if not jobs:
                idle += 1
                await asyncio.sleep(0)
                continue
            idle = 0
            for job in jobs:
                key = key_of[job.id]
                assert key not in running, f"{job.id} started while {running.get(key)} ran"
                running[key] = job.id
            await asyncio.sleep(0)  # other claimers run while these are held
            outcomes = []
            for job in jobs:
                del running[key_of[job.id]]
                if rng.random() < 0.2:
                    outcomes.append(Outcome(job.id, "retry", run_at=now, error="flaky"))
                else:
                    done[key_of[job.id]].append(job.id)
                    outcomes.append(Outcome(job.id, "succeeded"))
            assert len(await queue.complete(outcomes, worker=worker, now=now)) == len(jobs)

    await asyncio.gather(
        *(claimer(queue, f"w{i}-{n}") for i, queue in enumerate(queues) for n in range(4))
    )
    return done


def _interleaved(now: float, keys: int, each: int) -> tuple[list[NewJob], dict[str, list[str]]]:
    per_key = {f"key-{k}": [f"k{k}-{n:02d}" for n in range(each)] for k in range(keys)}
    jobs = [
        keyed(now, key, id=ids[n], priority=(n * 7 + k) % 3)  # priorities do not reorder a key
        for n in range(each)
        for k, (key, ids) in enumerate(per_key.items())
    ]
    return jobs, per_key


async def test_many_concurrent_claimers_keep_every_key_in_order(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Twelve keys of ten jobs each, interleaved, drained by four concurrent claimers that fail
    a fifth of their runs: no key ever runs two jobs at once, and each key's jobs succeed in
    the order they were enqueued."""
    now = clock.time()
    jobs, per_key = _interleaved(now, 12, 10)
    await job_queue.enqueue(jobs, now=now)
    done = await _drain_in_order([job_queue], now, per_key)
    assert done == per_key
    assert all(j.state is JobState.SUCCEEDED for j in await job_queue.find(JobFilter(), limit=500))


async def test_claimers_on_separate_connections_keep_every_key_in_order(
    job_backend: JobBackend, job_queue: JobQueue, clock: FakeClock
) -> None:
    """Claimers on three separate stores (connections) over one database keep each key's jobs
    one at a time and in enqueue order."""
    now = clock.time()
    jobs, per_key = _interleaved(now, 8, 8)
    await job_queue.enqueue(jobs, now=now)
    others = [
        await open_store(job_backend.url, clock=clock, **job_backend.options) for _ in range(2)
    ]
    try:
        queues = [job_queue, *[await open_job_queue(store) for store in others]]
        done = await _drain_in_order(queues, now, per_key)
    finally:
        for store in others:
            await store.close()
    assert done == per_key


async def test_three_processes_start_each_keys_jobs_in_order(
    job_backend: JobBackend, job_queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    """3 OS processes claim from one queue at once and note each job when it starts (before
    completing it): every job is claimed once, and each key's jobs started in enqueue order."""
    now = clock.time()
    jobs, per_key = _interleaved(now, 20, 10)
    await job_queue.enqueue(jobs, now=now)
    log = tmp_path / "started.log"
    results = await asyncio.to_thread(
        _run_claimers, job_backend, now, 3, log=str(log), idle_rounds=50
    )
    assert sorted(i for got in results for i in got) == sorted(
        i for ids in per_key.values() for i in ids
    )
    started = log.read_text().split()
    key_of = {job_id: key for key, ids in per_key.items() for job_id in ids}
    in_order: dict[str, list[str]] = defaultdict(list)
    for job_id in started:
        in_order[key_of[job_id]].append(job_id)
    assert in_order == per_key
