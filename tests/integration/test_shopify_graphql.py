"""ShopifyConnector on the GraphQL Admin API (its default) against the sandbox, over real HTTP.

Policies run on a FakeClock; where the simulator's cost bucket matters it refills on the same
fake clock, so a wait of the client restores points. The sandbox's effect record is the ground
truth for "how many customers were created".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from antifragile.connectors import ShopifyConnector
from antifragile.connectors._shopify import API_ENV
from antifragile.sandbox import ProviderSandbox, ShopifySimulator
from tests.integration._faults import FAULT_KINDS
from tests.integration._shopify import Connect, connectors

TOKEN = "shpat_graphql_token"
GRAPHQL = "POST /admin/api/{version}/graphql.json"
REST_CREATE = "POST /admin/api/{version}/customers.json"


@pytest.fixture
def simulator(clock: FakeClock) -> ShopifySimulator:
    return ShopifySimulator(
        access_tokens=[TOKEN], cost_bucket=1000, restore_rate=50, clock=clock.monotonic
    )


@pytest.fixture
def sandbox(simulator: ShopifySimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connect]:
    """Connectors for the sandbox on the fake clock (no API setting in the environment)."""
    monkeypatch.delenv(API_ENV, raising=False)
    async with connectors(sandbox, clock, TOKEN) as factory:
        yield factory


def graphql_requests(sandbox: ProviderSandbox) -> list[Any]:
    return [r for r in sandbox.requests if r.path.endswith("/graphql.json")]


async def test_create_customer_is_customer_create_with_one_effect(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """By default the connector POSTs ``customerCreate`` to ``graphql.json`` with the token
    header; the customer comes back with its numeric id and gid, and one effect is recorded."""
    shopify = connect()
    assert shopify.api == "graphql"
    customer = await shopify.create_customer(
        email="Ada@Example.com", first_name="Ada", tags=["vip", "intake"]
    )
    (request,) = sandbox.requests
    assert request.path == "/shopify/admin/api/2025-01/graphql.json"
    assert request.headers["x-shopify-access-token"] == TOKEN
    body = request.json()
    assert body["query"].startswith("mutation customerCreate(")
    assert body["variables"]["input"] == {
        "email": "Ada@Example.com",
        "firstName": "Ada",
        "tags": ["vip", "intake"],
    }
    (effect,) = sandbox.effects("shopify", GRAPHQL)
    assert effect.id == str(customer.id)
    assert effect.data["customer"]["first_name"] == "Ada"
    assert customer.gid == f"gid://shopify/Customer/{customer.id}"
    assert customer.data["firstName"] == "Ada"
    assert customer.email == "ada@example.com"
    assert not customer.found_existing


async def test_taken_email_user_error_leads_to_the_lookup(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A second ``customerCreate`` for the same email gets the ``userErrors`` entry "Email has
    already been taken"; the connector looks the email up with ``customers(first, query:
    "email:...")`` and returns the customer that has it -- still one customer."""
    shopify = connect()
    first = await shopify.create_customer(email="grace@example.com")
    again = await shopify.create_customer(email="GRACE@example.com", first_name="Grace")
    assert again.id == first.id
    assert again.found_existing
    assert len(sandbox.effects("shopify", GRAPHQL)) == 1
    lookup = graphql_requests(sandbox)[-1].json()
    assert lookup["query"].startswith("query customers(")
    assert lookup["variables"]["query"] == "email:GRACE@example.com"


async def test_other_user_errors_are_invalid_request_without_lookup(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A ``userErrors`` entry that is not a taken email (an invalid one) is an
    InvalidRequestError carrying Shopify's message; nothing is looked up or created."""
    with pytest.raises(InvalidRequestError) as caught:
        await connect().create_customer(email="not-an-email")
    assert "email: Email is invalid" in str(caught.value)
    assert not caught.value.retryable
    assert len(graphql_requests(sandbox)) == 1
    assert sandbox.effects("shopify") == []


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_customer(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault on the first GraphQL request -- latency, a 5xx, a 429, a reset, a hang, an
    ambiguous failure (created, answer lost) -- ends with exactly one customer: replaying
    ``customerCreate`` is safe because the email is the natural key. A malformed 200 is a
    retryable error; the next call makes (or finds) the one customer."""
    sandbox.faults("shopify", GRAPHQL, script=[FAULT_KINDS[kind]])
    if kind == "malformed":
        with pytest.raises(UpstreamUnavailableError) as caught:
            await connect().create_customer(email="ada@example.com")
        assert caught.value.retryable
    customer = await connect().create_customer(email="ada@example.com")
    (effect,) = sandbox.effects("shopify", GRAPHQL)
    assert effect.id == str(customer.id)


async def test_throttled_waits_for_the_bucket_to_refill_then_succeeds(
    sandbox: ProviderSandbox, simulator: ShopifySimulator, connect: Connect, clock: FakeClock
) -> None:
    """With 4 points left (another app spent the rest), ``customerCreate`` (10 points) is
    answered 200 ``THROTTLED``; the connector waits (10 - 4) / 50 = 0.12 s on the clock -- the
    time Shopify's bucket needs -- and the resend creates the customer once."""
    shopify = connect()
    simulator.fill_cost(4)
    customer = await shopify.create_customer(email="ada@example.com")
    first, second = graphql_requests(sandbox)
    assert first.status == second.status == 200
    assert first.at <= second.at
    assert sum(clock.sleeps) == pytest.approx(0.12, abs=0.021)
    (effect,) = sandbox.effects("shopify", GRAPHQL)
    assert effect.id == str(customer.id)
    # the limiter now holds Shopify's figures: 1000 points restored at 50 per second
    assert shopify.policy.rate is not None
    assert (shopify.policy.rate.burst, shopify.policy.rate.rate) == (1000.0, 50.0)


async def test_throttle_status_slows_the_client_before_shopify_throttles(
    sandbox: ProviderSandbox, simulator: ShopifySimulator, connect: Connect, clock: FakeClock
) -> None:
    """``throttleStatus`` of each answer clamps the limiter to what Shopify's bucket holds:
    after an answer saying 5 points are left, the next ``customerCreate`` (10 points) waits
    (10 - 5) / 50 = 0.1 s on its own, and Shopify never answers ``THROTTLED``."""
    shopify = connect()
    simulator.fill_cost(15)
    await shopify.create_customer(email="first@example.com")  # answer: 5 points left
    assert clock.sleeps == []
    await shopify.create_customer(email="second@example.com")
    assert sum(clock.sleeps) == pytest.approx(0.1, abs=0.021)
    assert len(simulator.customers) == 2
    assert len(graphql_requests(sandbox)) == 2  # no request was answered THROTTLED


async def test_a_bucket_that_never_refills_in_time_is_rate_limited(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore rate so slow that the wait exceeds the limiter's ``max_wait`` ends in a
    RateLimitedError; nothing is created."""
    monkeypatch.delenv(API_ENV, raising=False)
    slow = ShopifySimulator(
        access_tokens=[TOKEN], cost_bucket=1000, restore_rate=0.01, clock=clock.monotonic
    )
    slow.fill_cost(0)
    with ProviderSandbox([slow]) as running:
        async with ShopifyConnector(
            TOKEN, base_url=running.base_url("shopify"), clock=clock, timeout=10.0
        ) as shopify:
            with pytest.raises(RateLimitedError):
                await shopify.create_customer(email="ada@example.com")
    assert slow.customers == []


async def test_refused_token_is_an_authentication_error(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A token Shopify does not know is 401 on the GraphQL endpoint too: not retried."""
    with pytest.raises(AuthenticationError):
        await connect("shpat_wrong").create_customer(email="ada@example.com")
    assert len(sandbox.requests) == 1


async def test_rest_stays_available_behind_the_setting(
    sandbox: ProviderSandbox, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ANTIFRAGILE_SHOPIFY_API=rest`` (or ``api="rest"``) keeps the REST Admin API:
    ``POST customers.json``, the leaky-bucket policy; an unknown API is a ConfigurationError."""
    monkeypatch.setenv(API_ENV, "rest")
    shopify = connect()
    assert shopify.api == "rest"
    assert shopify.policy.rate is not None
    assert shopify.policy.rate.burst == 40.0
    customer = await shopify.create_customer(email="ada@example.com")
    (effect,) = sandbox.effects("shopify", REST_CREATE)
    assert effect.id == str(customer.id)
    again = await connect(api="rest").create_customer(email="ada@example.com")
    assert again.found_existing
    assert again.id == customer.id
    assert graphql_requests(sandbox) == []
    with pytest.raises(ConfigurationError):
        connect(api="soap")


def test_raw_graphql_answers_have_shopifys_shapes(clock: FakeClock) -> None:
    """The simulator's own answers: ``extensions.cost`` on every answer, ``userErrors`` for a
    taken email, ``THROTTLED`` with ``actualQueryCost: null`` and no ``data``, a field it does
    not know as a GraphQL error; the REST call-limit header only on REST answers."""
    simulator = ShopifySimulator(cost_bucket=100, restore_rate=10, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as running:
        url = f"{running.base_url('shopify')}/admin/api/2025-01/graphql.json"
        auth = {"X-Shopify-Access-Token": TOKEN}
        create = {
            "query": "mutation c($input: CustomerInput!) { customerCreate(input: $input) "
            "{ customer { id } userErrors { field message } } }",
            "variables": {"input": {"email": "ada@example.com"}},
        }
        with httpx.Client() as http:
            created = http.post(url, json=create, headers=auth)
            taken = http.post(url, json=create, headers=auth)
            literal = http.post(
                url,
                json={
                    "query": '{ customers(first: 5, query: "email:ada@example.com") '
                    "{ nodes { id } } }"
                },
                headers=auth,
            )
            unknown = http.post(url, json={"query": "{ shop { name } }"}, headers=auth)
            simulator.fill_cost(2)
            throttled = http.post(url, json=create, headers=auth)
    assert created.status_code == 200
    assert "x-shopify-shop-api-call-limit" not in created.headers
    answer = created.json()
    customer_id = answer["data"]["customerCreate"]["customer"]["id"]
    assert customer_id.startswith("gid://shopify/Customer/")
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 10
    assert answer["extensions"]["cost"]["throttleStatus"] == {
        "maximumAvailable": 100.0,
        "currentlyAvailable": 90.0,
        "restoreRate": 10.0,
    }
    assert taken.json()["data"]["customerCreate"] == {
        "customer": None,
        "userErrors": [{"field": ["email"], "message": "Email has already been taken"}],
    }
    assert literal.json()["data"]["customers"]["nodes"][0]["id"] == customer_id
    assert literal.json()["extensions"]["cost"]["requestedQueryCost"] == 7
    assert "doesn't exist" in unknown.json()["errors"][0]["message"]
    body = throttled.json()
    assert throttled.status_code == 200
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert body["extensions"]["cost"]["actualQueryCost"] is None
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 2.0
