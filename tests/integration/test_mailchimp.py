"""MailchimpConnector against the sandbox's Mailchimp Marketing simulator, over real HTTP.

The list-member upsert is a ``PUT`` by the subscriber hash: naturally idempotent, so every
fault -- ambiguous ones included -- is retried and the audience still holds one member per
address. The simulator's simultaneous-connection limit shows what the default bulkhead is for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    NotFoundError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import MailchimpConnector, Member, subscriber_hash
from antifragile.connectors._mailchimp import API_KEY_ENV, LIST_ID_ENV, data_center
from antifragile.sandbox import MailchimpSimulator, ProviderFault, ProviderSandbox
from tests.integration._faults import FAULT_KINDS

KEY = "0123456789abcdef-us21"
LIST = "a1b2c3d4e5"
PUT = "PUT /lists/{list_id}/members/{subscriber_hash}"

Connect = Callable[..., MailchimpConnector]


@pytest.fixture
def simulator() -> MailchimpSimulator:
    return MailchimpSimulator(api_keys=[KEY], lists=[LIST])


@pytest.fixture
def sandbox(simulator: MailchimpSimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[MailchimpConnector] = []

    def factory(api_key: str = KEY, **options: Any) -> MailchimpConnector:
        options.setdefault("timeout", 0.3)
        options.setdefault("base_url", sandbox.base_url("mailchimp"))
        options.setdefault("list_id", LIST)
        connector = MailchimpConnector(api_key, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


def test_subscriber_hash_is_md5_of_the_lowercased_address() -> None:
    """The member id is the MD5 hex of the lower-cased address (Mailchimp's own example
    address and case folding)."""
    expected = hashlib.md5(b"urist.mcvankab@freddiesjokes.com").hexdigest()
    assert subscriber_hash(" Urist.McVankab@FreddiesJokes.com ") == expected
    assert data_center(KEY) == "us21"
    with pytest.raises(ConfigurationError):
        data_center("no-data-centre-")


async def test_upsert_creates_then_updates_one_member(
    sandbox: ProviderSandbox, simulator: MailchimpSimulator, connect: Connect
) -> None:
    """A PUT by the hash creates the member with ``status_if_new`` (``pending`` by default:
    double opt-in); again with other merge fields it updates the same member (Basic auth, the
    key as password)."""
    connector = connect()
    first = await connector.upsert_member("Ada@Example.com", merge_fields={"FNAME": "Ada"})
    assert first == Member(subscriber_hash("ada@example.com"), LIST, "pending")
    await connector.upsert_member("ada@example.com", merge_fields={"LNAME": "Lovelace"})
    (member,) = simulator.members(LIST)
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    assert sandbox.requests[0].headers["authorization"].startswith("Basic ")


async def test_an_unsubscribed_member_keeps_its_status(
    simulator: MailchimpSimulator, connect: Connect
) -> None:
    """``status_if_new`` never re-subscribes someone who left: an existing member's status
    stays as it is."""
    connector = connect()
    await connector.upsert_member("ada@example.com", status_if_new="unsubscribed")
    again = await connector.upsert_member("ada@example.com")
    assert again.status == "unsubscribed"


async def test_errors_are_mailchimps_problem_details(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A bad key is 401 AuthenticationError, an unknown list 404 NotFoundError, a bad status
    400 InvalidRequestError -- each with Mailchimp's title, none retried, no address shown."""
    with pytest.raises(AuthenticationError) as auth:
        await connect("wrong-us21").upsert_member("ada@example.com")
    assert "API Key Invalid" in str(auth.value)
    with pytest.raises(NotFoundError):
        await connect(list_id="nope").upsert_member("ada@example.com")
    simulator_error = connect()
    with pytest.raises(ConfigurationError):
        await simulator_error.upsert_member("ada@example.com", status_if_new="maybe")
    assert len(sandbox.requests) == 2
    assert sandbox.effects("mailchimp") == []


async def test_invalid_resource_is_not_retried(sandbox: ProviderSandbox, connect: Connect) -> None:
    """Mailchimp's 400 ``Invalid Resource`` (its anti-abuse refusal, say) reaches the caller
    with its title after one request, the address masked out of the error."""
    sandbox.faults("mailchimp", PUT, script=[ProviderFault.error(400)])
    with pytest.raises(InvalidRequestError) as caught:
        await connect().upsert_member("ada@example.com")
    assert "Invalid Resource" in str(caught.value)
    assert "ada@example.com" not in str(caught.value)
    assert len(sandbox.requests) == 1


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_with_one_member(
    sandbox: ProviderSandbox, simulator: MailchimpSimulator, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request -- latency, 5xx, 429, a reset, a
    hang, a malformed answer, an ambiguous failure -- is retried (a PUT is safe to repeat) and
    the audience holds exactly one member."""
    sandbox.faults("mailchimp", PUT, script=[FAULT_KINDS[kind]])
    member = await connect().upsert_member("ada@example.com", merge_fields={"FNAME": "Ada"})
    assert member.id == subscriber_hash("ada@example.com")
    assert len(simulator.members(LIST)) == 1
    puts = [r for r in sandbox.requests if r.method == "PUT"]
    assert len(puts) == (1 if kind == "latency" else 2)


async def test_the_default_bulkhead_keeps_within_ten_connections(
    sandbox: ProviderSandbox, simulator: MailchimpSimulator, clock: FakeClock
) -> None:
    """25 upserts at once with answers that take 0.3 s: the default policy's bulkhead of 10
    never holds more than 10 connections, so Mailchimp never answers 429; without it (one
    attempt each) the simulator refuses the ones beyond 10."""
    simulator.configure({"hold": 0.3})
    sandbox.faults("mailchimp", PUT, latency=0.3)
    async with MailchimpConnector(
        KEY, base_url=sandbox.base_url("mailchimp"), list_id=LIST, clock=clock, timeout=10.0
    ) as guarded:
        await asyncio.gather(*(guarded.upsert_member(f"a{i}@example.com") for i in range(25)))
    assert simulator.peak_connections <= 10
    assert not any(r.status == 429 for r in sandbox.requests)
    assert len(simulator.members(LIST)) == 25

    sandbox.reset()
    simulator.configure({"hold": 5.0})
    sandbox.faults("mailchimp", PUT, latency=5.0)
    bare = Policy("mailchimp", clock=clock, retry=Retry(attempts=1), breaker=None, budget=None)
    async with MailchimpConnector(
        KEY,
        base_url=sandbox.base_url("mailchimp"),
        list_id=LIST,
        policy=bare,
        clock=clock,
        timeout=30.0,
    ) as unguarded:
        results = await asyncio.gather(
            *(unguarded.upsert_member(f"b{i}@example.com") for i in range(15)),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, RateLimitedError)]
    assert refused
    assert len(simulator.members(LIST)) == 15 - len(refused)


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key's data centre makes the default address; ``ANTIFRAGILE_MAILCHIMP_LIST_ID`` is
    the default audience; without a key the connector refuses to start."""
    monkeypatch.setenv(API_KEY_ENV, "abc-us7")
    monkeypatch.setenv(LIST_ID_ENV, "list-1")
    connector = MailchimpConnector()
    assert connector.base_url == "https://us7.api.mailchimp.com/3.0"
    assert connector.list_id == "list-1"
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ConfigurationError):
        MailchimpConnector()
