"""Two assistants -- two "processes" of the service -- share their breakers and their per-sender
limit through the shared-state store: the job database (a real SQLite file) by default, Redis
(db 9) when ``ANTIFRAGILE_REDIS_URL`` is set.

Both assistants run on one FakeClock; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from antifragile.errors import CircuitOpenError, UpstreamUnavailableError
from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.policies import CircuitState, FakeClock
from antifragile.service import Assistant, Settings
from antifragile.service._limits import InboundLimits
from antifragile.stores import SharedCircuitBreaker, Store, open_store

PROVIDER = "resend"
#: the keys the Redis store keeps the provider's breaker under (its default prefix)
BREAKER_KEYS = (f"antifragile:{{breaker:{PROVIDER}}}", f"antifragile:{{breaker:{PROVIDER}}}:w")


@pytest.fixture(autouse=True)
def _resend_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured provider, so each assistant builds its connector (never called here)."""
    monkeypatch.setenv("ANTIFRAGILE_RESEND_API_KEY", "re_test_shared")
    monkeypatch.setenv("ANTIFRAGILE_RESEND_BASE_URL", "http://127.0.0.1:9")


@pytest.fixture
async def clean_redis(redis_url: str) -> AsyncIterator[str]:
    """*redis_url*, without the provider's breaker records before and after the test."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.delete(*BREAKER_KEYS)
        yield redis_url
        await client.delete(*BREAKER_KEYS)
    finally:
        await client.aclose()


def settings_for(tmp_path: Path, redis_url: str | None = None) -> Settings:
    env = {
        "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "ANTIFRAGILE_INBOUND_SENDER_RATE": "2/60",
    }
    if redis_url:
        env["ANTIFRAGILE_REDIS_URL"] = redis_url
    return Settings.from_env(env)


@asynccontextmanager
async def two_assistants(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[Assistant, Assistant]]:
    one, two = Assistant(settings, clock=clock), Assistant(settings, clock=clock)
    await one.open()
    try:
        await two.open()
        try:
            yield one, two
        finally:
            await two.close()
    finally:
        await one.close()


async def trip(breaker: SharedCircuitBreaker) -> None:
    """Open *breaker* the way failing calls do: failures until it opens."""
    for _ in range(50):
        if breaker.state is CircuitState.OPEN:
            return
        token = await breaker.aacquire()
        await breaker.aon_failure(token, UpstreamUnavailableError("HTTP 503", provider=PROVIDER))
    raise AssertionError(f"the breaker did not open: {breaker.state}")


def state_store(assistant: Assistant) -> Store | None:
    return assistant.state_store


def message(sender: str, n: int) -> InboundEvent:
    return InboundEvent(
        channel=Channel.WHATSAPP,
        event_id=f"wamid.shared.{uuid.uuid4().hex}.{n}",
        kind=EventKind.MESSAGE,
        tenant_key="106540352242922",
        sender=sender,
        text="hello, what are your prices?",
        topic="text",
    )


async def process(assistant: Assistant, sender: str, n: int) -> str:
    """Record one message from *sender* in *assistant* and process it there: the status."""
    (recorded,) = await assistant.ingest([message(sender, n)])
    assert recorded.job_id is not None
    await assistant.worker(queues=["inbound"], concurrency=1).run_until_idle()
    job = await assistant.jobs.queue.get(recorded.job_id)
    assert job is not None
    assert isinstance(job.result, dict), job
    return str(job.result["status"])


async def check_shared_state(one: Assistant, two: Assistant) -> None:
    # a breaker opened by one process is open in the other
    first, second = one.breakers()[PROVIDER], two.breakers()[PROVIDER]
    assert isinstance(first, SharedCircuitBreaker)
    assert isinstance(second, SharedCircuitBreaker)
    assert first is not second
    await trip(first)
    await second.refresh()
    assert second.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await second.aacquire()
    # the per-sender limit (2 a minute) is global: the second process refuses the third message
    sender = f"4477009{uuid.uuid4().int % 100000:05d}"
    assert [await process(one, sender, n) for n in range(2)] == ["replied", "replied"]
    assert await process(two, sender, 2) == "rate_limited"
    assert await process(two, f"4477008{uuid.uuid4().int % 100000:05d}", 3) == "replied"


async def test_processes_on_one_database_share_breakers_and_sender_limits(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Without Redis, the shared state is the job database's: a breaker opened by one
    assistant is open in the other, its record is in the database, and the per-sender limit
    counts the messages of both (the second refuses once the first used the quota)."""
    async with two_assistants(settings_for(tmp_path), clock) as (one, two):
        assert one.state_store is one.jobs.queue.store
        assert isinstance(one.limits, InboundLimits)
        assert one.limits.store is one.jobs.queue.store.rate_limits
        await check_shared_state(one, two)
        record = await one.jobs.queue.store.breakers.load(PROVIDER)
        assert record.state == "open"


async def test_with_redis_the_shared_state_lives_in_redis(
    tmp_path: Path, clock: FakeClock, clean_redis: str
) -> None:
    """With ANTIFRAGILE_REDIS_URL, both assistants keep breakers and sender limits in Redis:
    the breaker opened by one is open in the other and its record is in Redis (the database
    has none); the per-sender limit is global; closing releases the Redis store."""
    async with two_assistants(settings_for(tmp_path, clean_redis), clock) as (one, two):
        assert one.state_store is not None
        assert one.state_store is not one.jobs.queue.store
        assert one.connectors.store is one.state_store
        await check_shared_state(one, two)
        database_record = await one.jobs.queue.store.breakers.load(PROVIDER)
        assert database_record.state == "closed"
        assert database_record.generation == 0
    assert state_store(one) is None  # closed with the assistant
    redis_store = await open_store(clean_redis, clock=clock)
    try:
        record = await redis_store.breakers.load(PROVIDER)
    finally:
        await redis_store.close()
    assert record.state == "open"


async def test_an_unreachable_redis_leaves_the_state_in_the_process(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A configured Redis that does not answer does not stop the assistant: breakers and
    limits run process-local (no shared store), and nothing lands in the database."""
    settings = settings_for(tmp_path, "redis://127.0.0.1:1/0")
    async with Assistant(settings, clock=clock) as assistant:
        assert assistant.state_store is None
        assert assistant.limits is not None
        assert assistant.limits.store is None
        breaker = assistant.breakers()[PROVIDER]
        assert not isinstance(breaker, SharedCircuitBreaker)


def test_the_breakers_command_reads_where_the_breakers_live(tmp_path: Path, redis_url: str) -> None:
    """``antifragile breakers`` follows the assistant's rule: with ANTIFRAGILE_REDIS_URL it
    reads Redis (where a running assistant opened the breaker), else the database (where that
    assistant wrote nothing)."""
    import json

    import redis
    from typer.testing import CliRunner

    from antifragile.cli import app

    settings = settings_for(tmp_path, redis_url)

    async def open_the_breaker() -> None:
        async with Assistant(settings, clock=FakeClock()) as one:
            breaker = one.breakers()[PROVIDER]
            assert isinstance(breaker, SharedCircuitBreaker)
            await trip(breaker)

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*BREAKER_KEYS)
        asyncio.run(open_the_breaker())
        runner = CliRunner()
        env = {"ANTIFRAGILE_DATABASE_URL": settings.database_url}
        states = {}
        for name, redis_env in (("redis", redis_url), ("database", None)):
            result = runner.invoke(
                app, ["breakers", "--json"], env={**env, "ANTIFRAGILE_REDIS_URL": redis_env}
            )
            assert result.exit_code == 0, result.output
            rows = {row["provider"]: row for row in json.loads(result.output)}
            states[name] = rows[PROVIDER]["state"]
        assert states == {"redis": "open", "database": "closed"}
    finally:
        client.delete(*BREAKER_KEYS)
        client.close()
