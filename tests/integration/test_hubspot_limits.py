"""HubSpot's limits and batch calls against the sandbox's simulator over real HTTP: a 429
without ``Retry-After`` waits for the burst window, ``DAILY`` pauses the provider until the
daily reset, the ``Daily`` headers are sent, contacts are upserted by email in batches of 100
and found by email. Policies run on a FakeClock (waits land in ``clock.sleeps``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from antifragile import (
    ConfigurationError,
    FakeClock,
    Policy,
    RateLimitedError,
    Retry,
    TokenBucket,
)
from antifragile.connectors import HubSpotConnector
from antifragile.connectors._quota import until_daily_reset
from antifragile.sandbox import HubSpotSimulator, ProviderFault, ProviderSandbox

TOKEN = "pat-na1-test-token"
CREATE = "POST /crm/v3/objects/contacts"
UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"


def connector(
    sandbox: ProviderSandbox, clock: FakeClock, daily_reset_timezone: str = "UTC"
) -> HubSpotConnector:
    bucket = TokenBucket(1000, burst=1000, max_wait=30)
    policy = Policy("hubspot", rate=bucket, clock=clock, retry=Retry(attempts=3))
    return HubSpotConnector(
        TOKEN,
        base_url=sandbox.base_url("hubspot"),
        policy=policy,
        clock=clock,
        daily_reset_timezone=daily_reset_timezone,
    )


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[ProviderSandbox]:
    simulator = HubSpotSimulator(tokens=[TOKEN], burst=2, interval=10, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as running:
        yield running


async def test_a_burst_429_without_retry_after_waits_for_the_window(
    sandbox: ProviderSandbox, clock: FakeClock
) -> None:
    """A 429 ``TEN_SECONDLY_ROLLING`` without ``Retry-After`` is retried after the announced
    10 000 ms window, not after a fraction of a second."""
    sandbox.faults("hubspot", CREATE, script=[ProviderFault.rate_limited(0.01)])
    async with connector(sandbox, clock) as hubspot:
        await hubspot.create_contact("a@example.com")
    assert [r.status for r in sandbox.requests] == [429, 201]
    assert 10.0 in clock.sleeps
    assert all(s >= 10.0 for s in clock.sleeps if s > 0)


async def test_the_announced_interval_is_the_wait(clock: FakeClock) -> None:
    """A scripted 429 ``TEN_SECONDLY_ROLLING`` from a simulator whose window is 4 s: the
    connector waits the 4 000 ms its interval header announces."""
    simulator = HubSpotSimulator(tokens=[TOKEN], interval=4, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        sandbox.faults("hubspot", CREATE, script=[ProviderFault.rate_limited(0.01)])
        async with connector(sandbox, clock) as hubspot:
            await hubspot.create_contact("a@example.com")
    assert 4.0 in clock.sleeps


def test_without_the_interval_header_the_window_is_ten_seconds(clock: FakeClock) -> None:
    """HubSpot's 429 body alone (no rate-limit header, no Retry-After): 10 s, or 1 s for the
    older ``SECONDLY`` policy."""
    hubspot = HubSpotConnector(TOKEN, base_url="http://127.0.0.1:9", clock=clock)
    for policy, wait in (("TEN_SECONDLY_ROLLING", 10.0), ("SECONDLY", 1.0)):
        body = {"status": "error", "errorType": "RATE_LIMIT", "policyName": policy}
        request = httpx.Request("POST", "http://127.0.0.1:9/crm/v3/objects/contacts")
        answer = httpx.Response(429, json=body, request=request)
        refined = hubspot._refine(RateLimitedError("429", retry_after=0.04), answer)
        assert isinstance(refined, RateLimitedError)
        assert refined.retry_after == wait


async def test_daily_limit_pauses_the_provider_until_the_reset(clock: FakeClock) -> None:
    """Every answer carries the ``Daily`` headers; once the daily limit is spent the 429
    ``DAILY`` is not retried within the call, its ``retry_after`` is the time to midnight in
    the account's zone, and the limiter refuses further calls without asking HubSpot."""
    simulator = HubSpotSimulator(tokens=[TOKEN], daily_limit=2, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        async with connector(sandbox, clock, daily_reset_timezone="America/New_York") as hubspot:
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    f"{sandbox.base_url('hubspot')}/crm/v3/objects/contacts/1",
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
            assert answer.headers["X-HubSpot-RateLimit-Daily"] == "2"
            assert answer.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
            await hubspot.create_contact("b@example.com")
            with pytest.raises(RateLimitedError) as spent:
                await hubspot.create_contact("c@example.com")
            expected = until_daily_reset(clock.time(), ZoneInfo("America/New_York"))
            assert spent.value.retry_after == pytest.approx(expected, abs=1.0)
            assert "DAILY" in str(spent.value)
            assert hubspot.daily_paused_until is not None
            asked = len(sandbox.requests)
            with pytest.raises(RateLimitedError):
                await hubspot.create_contact("d@example.com")
            assert len(sandbox.requests) == asked  # paused: HubSpot was not asked again
    assert [r.status for r in sandbox.requests] == [404, 201, 429]


def test_the_daily_reset_is_midnight_in_the_zone() -> None:
    noon = datetime(2026, 3, 7, 12, 0, tzinfo=UTC).timestamp()
    assert until_daily_reset(noon, ZoneInfo("UTC")) == 12 * 3600
    assert until_daily_reset(noon, ZoneInfo("America/New_York")) == 17 * 3600
    with pytest.raises(ConfigurationError):
        HubSpotConnector(TOKEN, base_url="http://127.0.0.1:9", daily_reset_timezone="Mars/Base")


async def test_batch_upsert_by_email_in_batches_of_100(clock: FakeClock) -> None:
    """250 contacts go out in 3 requests (100, 100, 50); an existing email is updated, not
    created again; results come back in input order with ``created`` = HubSpot's ``new``."""
    simulator = HubSpotSimulator(tokens=[TOKEN], burst=10_000, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        async with connector(sandbox, clock) as hubspot:
            existing = await hubspot.create_contact("c7@example.com", {"firstname": "Old"})
            due = {f"c{n}@example.com": {"firstname": f"N{n}"} for n in range(250)}
            contacts = await hubspot.upsert_contacts(due)
            again = await hubspot.upsert_contacts([("c7@example.com", {"lastname": "X"})])
            found = await hubspot.find_contact("C7@example.com")
            missing = await hubspot.find_contact("nobody@example.com")
        sizes = [len(r.json()["inputs"]) for r in sandbox.requests if r.path.endswith("upsert")]
        assert sizes == [100, 100, 50, 1]
        assert all(r.json()["inputs"][0]["idProperty"] == "email" for r in sandbox.requests[1:4])
    assert len(contacts) == 250
    assert contacts[7].id == existing.id
    assert not contacts[7].created
    assert sum(c.created for c in contacts) == 249
    assert [c.properties["email"] for c in contacts[:3]] == [f"c{n}@example.com" for n in range(3)]
    assert again[0].id == existing.id
    assert found is not None
    assert found.id == existing.id
    assert found.properties["lastname"] == "X"
    assert missing is None
    assert len(simulator.contacts) == 250


async def test_the_simulator_refuses_batches_over_100(sandbox: ProviderSandbox) -> None:
    inputs = [
        {"idProperty": "email", "id": f"x{n}@example.com", "properties": {}} for n in range(101)
    ]
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{sandbox.base_url('hubspot')}/crm/v3/objects/contacts/batch/upsert",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={"inputs": inputs},
        )
    assert answer.status_code == 400
    assert answer.json()["category"] == "VALIDATION_ERROR"
    assert sandbox.effects("hubspot") == []


async def test_the_connector_refuses_a_repeated_email(
    sandbox: ProviderSandbox, clock: FakeClock
) -> None:
    async with connector(sandbox, clock) as hubspot:
        with pytest.raises(ConfigurationError):
            await hubspot.upsert_contacts([("a@example.com", {}), ("A@example.com", {})])
    assert sandbox.requests == []
