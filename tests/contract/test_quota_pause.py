"""A spent quota pauses every process of a store: two registries on one store (as two workers
see it) against the sandbox's simulators over real HTTP -- the first spends the quota, the
second refuses locally without asking the provider, both send again after the reset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from antifragile import FakeClock, RateLimitedError
from antifragile.connectors import Connectors, ResendConnector
from antifragile.connectors._quota import PAUSE_KEY_PREFIX, QuotaPause, until_daily_reset
from antifragile.sandbox import (
    HubSpotSimulator,
    MandrillSimulator,
    ProviderSandbox,
    ResendSimulator,
)
from antifragile.stores import Store, open_store

KEY = "re_test_key_12345"
TOKEN = "pat-na1-test-token"
MANDRILL_KEY = "md-test-key"


def registry(
    store: Store, clock: FakeClock, provider: str, url: str, credentials: dict[str, str]
) -> Connectors:
    return Connectors(
        base_urls={provider: url}, options={provider: credentials}, store=store, clock=clock
    )


def email(n: int) -> dict[str, Any]:
    return {
        "sender": "shop@acme.example",
        "to": "ada@example.com",
        "subject": f"Order {n}",
        "text": "Thanks!",
        "idempotency_key": f"order/{n}",
    }


async def send(connectors: Connectors, n: int) -> str:
    sent = await connectors.resend.send_email(**email(n))
    return sent.id


async def test_a_spent_resend_quota_pauses_the_other_process(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    simulator = ResendSimulator(api_keys=[KEY], rate_limit=100, daily_quota=1)
    with ProviderSandbox([simulator]) as sandbox:
        url = sandbox.base_url("resend")
        first = registry(store, clock, "resend", url, {"api_key": KEY})
        second = registry(peer_store, clock, "resend", url, {"api_key": KEY})
        try:
            await send(first, 1)
            with pytest.raises(RateLimitedError) as spent:
                await send(first, 2)
            assert spent.value.local is False
            shared = await store.kv.get(PAUSE_KEY_PREFIX + "resend", now=clock.time())
            assert shared is not None
            assert shared.value == first.resend.quota_paused_until

            with pytest.raises(RateLimitedError) as refused:
                await send(second, 3)
            assert refused.value.local is True
            assert second.resend.quota_paused_until == first.resend.quota_paused_until
            assert [r.status for r in sandbox.requests] == [200, 429]  # not asked again

            simulator.daily_quota = 2  # both processes send one after the reset
            simulator.reset()  # midnight at Resend
            clock.advance(until_daily_reset(clock.time()) + 1)
            assert await send(second, 4)
            assert await send(first, 5)
            assert [r.status for r in sandbox.requests] == [200, 429, 200, 200]
        finally:
            await first.aclose()
            await second.aclose()


async def test_a_spent_hubspot_daily_limit_pauses_the_other_process(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    simulator = HubSpotSimulator(tokens=[TOKEN], daily_limit=1, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        url = sandbox.base_url("hubspot")
        first = registry(store, clock, "hubspot", url, {"access_token": TOKEN})
        second = registry(peer_store, clock, "hubspot", url, {"access_token": TOKEN})
        try:
            await first.hubspot.create_contact("a@example.com")
            with pytest.raises(RateLimitedError) as spent:
                await first.hubspot.create_contact("b@example.com")
            assert "DAILY" in str(spent.value)
            with pytest.raises(RateLimitedError) as refused:
                await second.hubspot.create_contact("c@example.com")
            assert refused.value.local is True
            assert second.hubspot.daily_paused_until == first.hubspot.daily_paused_until
            assert [r.status for r in sandbox.requests] == [201, 429]

            simulator.daily_limit = 2  # both processes call once after the reset
            simulator.reset()  # midnight at HubSpot
            clock.advance(until_daily_reset(clock.time()) + 1)
            assert (await second.hubspot.create_contact("d@example.com")).created
            assert (await first.hubspot.create_contact("e@example.com")).created
            assert [r.status for r in sandbox.requests] == [201, 429, 201, 201]
        finally:
            await first.aclose()
            await second.aclose()


async def test_a_queued_mandrill_send_pauses_the_other_process(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """Mandrill queues a send for a spent hourly quota: the process that saw it and the other
    one both refuse further sends locally until the next hour."""
    simulator = MandrillSimulator(api_keys=[MANDRILL_KEY])
    simulator.queued_reason = "hourly-quota-exhausted"
    with ProviderSandbox([simulator]) as sandbox:
        url = sandbox.base_url("mandrill")
        first = registry(store, clock, "mandrill", url, {"api_key": MANDRILL_KEY})
        second = registry(peer_store, clock, "mandrill", url, {"api_key": MANDRILL_KEY})
        try:
            sent = await first.mandrill.send_email(**email(1))
            assert sent.queued_reason == "hourly-quota-exhausted"
            for connectors, n in ((first, 2), (second, 3)):
                with pytest.raises(RateLimitedError) as refused:
                    await connectors.mandrill.send_email(**email(n))
                assert refused.value.local is True
            assert len(sandbox.requests) == 1
            assert second.mandrill.quota_paused_until == first.mandrill.quota_paused_until

            simulator.queued_reason = None
            clock.advance(3600)
            assert (await second.mandrill.send_email(**email(4))).status == "sent"
            assert (await first.mandrill.send_email(**email(5))).status == "sent"
            assert len(sandbox.requests) == 3
        finally:
            await first.aclose()
            await second.aclose()


async def test_the_shared_pause_is_read_at_most_once_per_second(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """A process learns of another's pause at its first sync after a second has passed since
    its last read; a shorter pause never shortens the shared one."""
    noticing = QuotaPause("resend", clock=clock, kv=store.kv)
    other = QuotaPause("resend", clock=clock, kv=peer_store.kv)
    assert await other.sync() is None
    until = clock.time() + 600
    noticing.start(until)
    assert await noticing.sync() == until
    assert await other.sync() is None  # read less than a second ago: the cached answer
    clock.advance(1)
    assert await other.sync() == until
    other.start(until - 300)  # a shorter pause noticed later is not shared over the longer one
    assert other.until == until
    shared = await store.kv.get(PAUSE_KEY_PREFIX + "resend", now=clock.time())
    assert shared is not None
    assert shared.value == until


async def test_a_store_that_fails_leaves_the_pause_local(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With its store closed (every call to it fails) a connector still sends, pauses itself
    on a spent quota, refuses locally without asking Resend, logs the outage once and sends
    again after the reset."""
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    await store.close()
    simulator = ResendSimulator(api_keys=[KEY], rate_limit=100, daily_quota=1)
    with ProviderSandbox([simulator]) as sandbox:
        resend = ResendConnector(
            KEY, base_url=sandbox.base_url("resend"), clock=clock, quota_store=store.kv
        )
        async with resend:
            caplog.set_level(logging.WARNING, logger="antifragile.connectors")
            await resend.send_email(**email(1))
            with pytest.raises(RateLimitedError):
                await resend.send_email(**email(2))
            for n in (3, 4):
                clock.advance(2)  # past the read interval: the store is tried again
                with pytest.raises(RateLimitedError) as refused:
                    await resend.send_email(**email(n))
                assert refused.value.local is True
            assert [r.status for r in sandbox.requests] == [200, 429]
            outages = [r for r in caplog.records if "store unavailable" in r.getMessage()]
            assert len(outages) == 1

            simulator.reset()
            clock.advance(until_daily_reset(clock.time()) + 1)
            assert (await resend.send_email(**email(5))).id
        assert [r.status for r in sandbox.requests] == [200, 429, 200]
