"""ShopifyConnector against the sandbox's Shopify simulator, over real HTTP.

Policies run on a FakeClock: back-offs, ``Retry-After`` waits and limiter pauses are recorded in
``clock.sleeps`` instead of being waited out. Where the simulator's leaky bucket matters it runs
on the same fake clock, so a wait of the client drains the bucket. The sandbox's effect record
is the ground truth for "how many customers were created". These tests speak the REST Admin
API (``ANTIFRAGILE_SHOPIFY_API=rest``); the GraphQL one is in ``test_shopify_graphql.py``.
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
    NetworkError,
    NotFoundError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from antifragile.connectors import (
    InventoryLevel,
    OutcomeUnknownError,
    ShopifyConnector,
    ShopifyCustomer,
)
from antifragile.connectors._shopify import ACCESS_TOKEN_ENV, API_ENV, BASE_URL_ENV
from antifragile.sandbox import ProviderFault, ProviderSandbox, ShopifySimulator
from tests.integration._faults import FAULT_KINDS
from tests.integration._shopify import Connect, connectors

TOKEN = "shpat_test_token"
CREATE = "POST /admin/api/{version}/customers.json"
DRAFT = "POST /admin/api/{version}/draft_orders.json"
DELETE_DRAFT = "DELETE /admin/api/{version}/draft_orders/{file}"
ORDER = "POST /admin/api/{version}/orders.json"
LIST_ORDERS = "GET /admin/api/{version}/orders.json"
LIMIT_HEADER = "x-shopify-shop-api-call-limit"


@pytest.fixture(autouse=True)
def rest_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connector here speaks REST, the setting that keeps it available."""
    monkeypatch.setenv(API_ENV, "rest")


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = ShopifySimulator(
        access_tokens=[TOKEN], bucket_size=100_000, inventory=[(11, 1, 5), (12, 1, 0), (11, 2, 7)]
    )
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    """Build connectors for the sandbox on the fake clock; they are closed afterwards."""
    async with connectors(sandbox, clock, TOKEN) as factory:
        yield factory


def customer_effects(sandbox: ProviderSandbox) -> list[Any]:
    return sandbox.effects("shopify", CREATE)


async def test_create_customer_succeeds_with_token_header_and_one_effect(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A create returns Shopify's customer (201); the request carries
    ``X-Shopify-Access-Token``; the sandbox records one customer; every answer carries
    ``X-Shopify-Shop-Api-Call-Limit``."""
    customer = await connect().create_customer(
        email="ada@example.com", first_name="Ada", tags=["vip", "b2b"]
    )
    (effect,) = customer_effects(sandbox)
    assert isinstance(customer, ShopifyCustomer)
    assert str(customer.id) == effect.id
    assert customer.email == "ada@example.com"
    assert not customer.found_existing
    assert customer.data["admin_graphql_api_id"] == f"gid://shopify/Customer/{customer.id}"
    assert effect.data["customer"]["tags"] == "vip, b2b"
    (request,) = sandbox.requests
    assert request.headers["x-shopify-access-token"] == TOKEN
    assert request.path == "/shopify/admin/api/2025-01/customers.json"
    assert request.status == 201


async def test_invalid_token_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """An unknown access token is 401 with Shopify's string ``errors``: a permanent
    AuthenticationError, tried once, and the token never shows in the error."""
    with pytest.raises(AuthenticationError) as caught:
        await connect("shpat_wrong").create_customer(email="ada@example.com")
    assert caught.value.status == 401
    assert "Invalid API key or access token" in str(caught.value)
    assert "shpat_wrong" not in str(caught.value)
    assert len(sandbox.requests) == 1
    assert customer_effects(sandbox) == []


async def test_field_errors_are_invalid_request_with_shopifys_messages(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Shopify's 422 ``{"errors": {field: [messages]}}`` becomes an InvalidRequestError naming
    the field and message; it is not retried and nothing is created."""
    connector = connect()
    with pytest.raises(InvalidRequestError) as caught:
        await connector.create_customer(email="not-an-email")
    assert caught.value.status == 422
    assert "email is invalid" in str(caught.value)
    with pytest.raises(InvalidRequestError) as phone:
        await connector.create_customer(email="ok@example.com", phone="abc")
    assert "phone is invalid" in str(phone.value)
    with pytest.raises(InvalidRequestError):
        await connector.create_draft_order([{"title": "Hat", "price": "x", "quantity": 1}])
    assert len(sandbox.requests) == 3
    assert sandbox.effects("shopify") == []


async def test_duplicate_email_returns_the_existing_customer(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Creating a customer whose email is taken (422 ``has already been taken``) looks the email
    up and returns the existing customer, marked ``found_existing``; still one customer."""
    connector = connect()
    first = await connector.create_customer(email="grace@example.com", first_name="Grace")
    again = await connector.create_customer(email="Grace@Example.com", first_name="G.")
    assert again.id == first.id
    assert again.found_existing
    assert len(customer_effects(sandbox)) == 1
    assert [r.status for r in sandbox.requests] == [201, 422, 200]


async def test_429_with_float_retry_after_is_honoured_then_succeeds(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 with ``Retry-After: 2.0`` (Shopify's float seconds) is waited out on the fake
    clock and retried; the customer is created once."""
    sandbox.faults("shopify", CREATE, script=[ProviderFault.rate_limited(2)])
    customer = await connect().create_customer(email="linus@example.com")
    refused = sandbox.requests[0]
    assert refused.status == 429
    assert 2.0 in clock.sleeps
    assert [e.id for e in customer_effects(sandbox)] == [str(customer.id)]


async def test_full_leaky_bucket_is_429_then_the_retry_passes(clock: FakeClock) -> None:
    """When the simulator's bucket (40, leaking 2/s) is full, Shopify answers 429 with a float
    ``Retry-After``; the client waits it out (the bucket leaks meanwhile) and succeeds, and
    every answer carries ``X-Shopify-Shop-Api-Call-Limit``."""
    simulator = ShopifySimulator(clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        simulator.fill(40)
        async with ShopifyConnector(
            TOKEN, base_url=sandbox.base_url("shopify"), clock=clock, timeout=1.0
        ) as shopify:
            await shopify.create_customer(email="mary@example.com")
        refused, accepted = sandbox.requests
    assert refused.status == 429
    assert accepted.status == 201
    assert any(s >= 0.5 for s in clock.sleeps)
    assert len(simulator.customers) == 1


async def test_429_beyond_the_attempts_is_rate_limited(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A shop that keeps answering 429 gives a retryable RateLimitedError; nothing created,
    and no lookup is made for a refused request."""
    sandbox.faults("shopify", CREATE, chaos=[(1.0, ProviderFault.rate_limited(0.5))])
    with pytest.raises(RateLimitedError) as caught:
        await connect().create_customer(email="ken@example.com")
    assert caught.value.retryable
    assert customer_effects(sandbox) == []
    assert all(r.status == 429 for r in sandbox.requests)


async def test_call_limit_header_slows_the_client_before_a_429(clock: FakeClock) -> None:
    """Another app has filled the shop's bucket to 38/40: the ``X-Shopify-Shop-Api-Call-Limit``
    answers clamp the local limiter, which waits (on the fake clock, which also drains the
    simulator's bucket) instead of running into a 429."""
    simulator = ShopifySimulator(clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        simulator.fill(38)
        async with ShopifyConnector(
            TOKEN, base_url=sandbox.base_url("shopify"), clock=clock, timeout=1.0
        ) as shopify:
            for n in range(4):
                await shopify.create_customer(email=f"c{n}@example.com")
        statuses = [r.status for r in sandbox.requests]
    assert statuses == [201] * 4
    assert sum(s for s in clock.sleeps if s > 0) >= 1.0
    assert len(simulator.customers) == 4


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_ends_with_exactly_one_customer(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The customer is created but the answer is lost (reset, or a hang past the attempt
    timeout): the replay is refused as a duplicate email, the connector looks the email up and
    returns the customer the first attempt created -- exactly one customer."""
    sandbox.faults("shopify", CREATE, script=[ProviderFault.ambiguous(lost=lost)])
    customer = await connect().create_customer(email="alan@example.com")
    (effect,) = customer_effects(sandbox)
    assert str(customer.id) == effect.id
    assert customer.found_existing


async def test_ambiguous_failures_until_the_attempts_run_out_end_in_a_lookup(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Every create attempt loses its answer: when the attempts run out, the connector looks
    the email up once more and returns the customer the first attempt created."""
    sandbox.faults("shopify", CREATE, chaos=[(1.0, ProviderFault.ambiguous())])
    customer = await connect().create_customer(email="edsger@example.com")
    (effect,) = customer_effects(sandbox)
    assert str(customer.id) == effect.id
    assert sandbox.requests[-1].method == "GET"


async def test_reset_before_anything_was_created_is_raised_when_lookup_finds_nothing(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Connections reset before Shopify acts: the attempts run out, the lookup finds no
    customer, and the caller gets the retryable NetworkError (a job would try again)."""
    sandbox.faults("shopify", CREATE, chaos=[(1.0, ProviderFault.reset())])
    with pytest.raises(NetworkError) as caught:
        await connect().create_customer(email="barbara@example.com")
    assert caught.value.retryable
    assert customer_effects(sandbox) == []


async def test_search_draft_order_and_inventory_levels(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``search_customers`` finds by ``email:``, ``create_draft_order`` answers Shopify's draft
    order for a known customer (201, one effect), ``inventory_levels`` filters by item and
    location; an unknown API version is a NotFoundError with Shopify's string ``errors``."""
    connector = connect()
    customer = await connector.create_customer(email="hedy@example.com", first_name="Hedy")
    found = await connector.search_customers("email:hedy@example.com")
    assert [c["id"] for c in found] == [customer.id]
    assert await connector.search_customers("email:nobody@example.com") == []
    draft = await connector.create_draft_order(
        [{"title": "Radio", "price": "19.50", "quantity": 2}], customer_id=customer.id
    )
    assert draft["total_price"] == "39.00"
    assert draft["customer"]["id"] == customer.id
    assert len(sandbox.effects("shopify", DRAFT)) == 1
    levels = await connector.inventory_levels(inventory_item_ids=[11])
    assert levels == [InventoryLevel(11, 1, 5), InventoryLevel(11, 2, 7)]
    assert await connector.inventory_levels(location_ids=[1], inventory_item_ids=[12]) == [
        InventoryLevel(12, 1, 0)
    ]
    with pytest.raises(NotFoundError) as missing:
        await connect(api_version="v1").search_customers("email:hedy@example.com")
    assert "Not Found" in str(missing.value)
    with pytest.raises(ConfigurationError):
        await connector.inventory_levels()


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_draft_order_is_found_by_its_key_not_replayed(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """A draft order created but whose answer was lost is looked up by the ``antifragile-key``
    note attribute (``GET /draft_orders.json``) and returned: one POST, one draft order."""
    sandbox.faults("shopify", DRAFT, script=[ProviderFault.ambiguous(lost=lost)])
    draft = await connect().create_draft_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], reconcile_key="cart/42"
    )
    (effect,) = sandbox.effects("shopify", DRAFT)
    assert draft["id"] == int(effect.id)
    attributes = effect.data["draft_order"]["note_attributes"]
    assert {"name": "antifragile-key", "value": "cart/42"} in attributes
    assert [r.method for r in sandbox.requests] == ["POST", "GET"]


async def test_ambiguous_draft_order_without_a_key_is_outcome_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Without a reconcile key a draft order cannot be looked up: after an ambiguous failure
    the caller gets a non-retryable OutcomeUnknownError and nothing is sent again."""
    sandbox.faults("shopify", DRAFT, script=[ProviderFault.ambiguous()])
    with pytest.raises(OutcomeUnknownError) as caught:
        await connect().create_draft_order([{"title": "Lamp", "price": "5", "quantity": 1}])
    assert not caught.value.retryable
    assert len(sandbox.requests) == 1
    assert len(sandbox.effects("shopify", DRAFT)) == 1


async def test_delete_draft_order_is_idempotent(sandbox: ProviderSandbox, connect: Connect) -> None:
    """``delete_draft_order`` (a saga compensation) answers True when it deleted the draft and
    False when Shopify no longer knows it (404): deleting twice has one effect."""
    connector = connect()
    draft = await connector.create_draft_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], reconcile_key="cart/1"
    )
    assert await connector.delete_draft_order(draft["id"]) is True
    assert await connector.delete_draft_order(draft["id"]) is False
    assert len(sandbox.effects("shopify", DELETE_DRAFT)) == 1
    assert await connector.find_draft_order("cart/1") is None


async def test_create_order_is_201_tagged_with_the_key(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``create_order`` answers Shopify's order (201, ``#1001``) for a known customer, with
    the caller's key as the ``antifragile-key`` note attribute and the tags joined; one
    effect; ``find_order`` finds it by the key."""
    connector = connect()
    customer = await connector.create_customer(email="ada@example.com")
    order = await connector.create_order(
        [{"title": "Radio", "price": "19.50", "quantity": 2}],
        idempotency_key="order/7",
        customer_id=customer.id,
        tags=["web", "vip"],
    )
    assert order.name == "#1001"
    assert not order.found_existing
    assert order.data["total_price"] == "39.00"
    assert order.data["email"] == "ada@example.com"
    assert order.data["tags"] == "web, vip"
    assert {"name": "antifragile-key", "value": "order/7"} in order.data["note_attributes"]
    (effect,) = sandbox.effects("shopify", ORDER)
    assert int(effect.id) == order.id
    found = await connector.find_order("order/7")
    assert found is not None
    assert found.id == order.id
    assert found.found_existing
    assert await connector.find_order("order/8") is None


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_order_ends_with_exactly_one_order(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The order is created but the answer is lost (reset, or a hang past the attempt
    timeout): the connector finds it by its key instead of sending again -- one POST, one
    order, returned with ``found_existing``."""
    sandbox.faults("shopify", ORDER, script=[ProviderFault.ambiguous(lost=lost)])
    order = await connect().create_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], idempotency_key="order/1"
    )
    (effect,) = sandbox.effects("shopify", ORDER)
    assert order.id == int(effect.id)
    assert order.found_existing
    assert [r.method for r in sandbox.requests] == ["POST", "GET"]


async def test_failure_without_an_order_is_looked_up_then_sent_again(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """An unparsable 2xx may follow a create, so the key is looked up (twice, a grace period
    apart) before sending again; as nothing was created, the second send makes the one
    order."""
    sandbox.faults("shopify", ORDER, script=[ProviderFault.malformed()])
    order = await connect().create_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], idempotency_key="order/2"
    )
    assert not order.found_existing
    assert len(sandbox.effects("shopify", ORDER)) == 1
    assert [r.method for r in sandbox.requests] == ["POST", "GET", "GET", "POST"]
    assert 2.0 in clock.sleeps


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_in_shopify_error_format_is_sent_again_without_lookup(
    sandbox: ProviderSandbox, connect: Connect, status: int
) -> None:
    """A 5xx carrying Shopify's ``{"errors": ...}`` body says the order was not created: it
    is sent again after a back-off, with no lookup, and exactly one order exists."""
    sandbox.faults("shopify", ORDER, script=[ProviderFault.error(status)])
    order = await connect().create_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], idempotency_key="order/3"
    )
    assert not order.found_existing
    assert len(sandbox.effects("shopify", ORDER)) == 1
    assert [(r.method, r.status) for r in sandbox.requests] == [("POST", status), ("POST", 201)]


async def test_ambiguous_order_whose_lookup_fails_is_outcome_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When the lookup cannot answer (Shopify keeps failing the list), the order may exist and
    is not sent again: a non-retryable OutcomeUnknownError carrying the key."""
    sandbox.faults("shopify", ORDER, script=[ProviderFault.ambiguous()])
    sandbox.faults("shopify", LIST_ORDERS, chaos=[(1.0, ProviderFault.error(503))])
    with pytest.raises(OutcomeUnknownError) as caught:
        await connect().create_order(
            [{"title": "Lamp", "price": "5", "quantity": 1}], idempotency_key="order/3"
        )
    assert caught.value.reconcile_key == "order/3"
    assert not caught.value.retryable
    assert len(sandbox.effects("shopify", ORDER)) == 1
    assert [r.method for r in sandbox.requests].count("POST") == 1


async def test_check_first_returns_an_order_an_earlier_attempt_made(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``check_first`` (a durable job's later attempt) looks the key up before sending: the
    order an earlier attempt created is returned and nothing is posted."""
    connector = connect()
    first = await connector.create_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}], idempotency_key="order/4"
    )
    again = await connector.create_order(
        [{"title": "Lamp", "price": "5", "quantity": 1}],
        idempotency_key="order/4",
        check_first=True,
    )
    assert again.id == first.id
    assert again.found_existing
    assert len(sandbox.effects("shopify", ORDER)) == 1


async def test_refused_order_is_invalid_request_without_lookup(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 422 (a bad price, an unknown customer) is an InvalidRequestError with Shopify's field
    errors: refused, so neither looked up nor sent again; an order without a key or lines is a
    ConfigurationError before any request."""
    connector = connect()
    with pytest.raises(InvalidRequestError) as caught:
        await connector.create_order(
            [{"title": "Lamp", "price": "x", "quantity": 1}], idempotency_key="order/5"
        )
    assert "line_items price is invalid" in str(caught.value)
    with pytest.raises(InvalidRequestError):
        await connector.create_order(
            [{"title": "Lamp", "price": "1", "quantity": 1}],
            idempotency_key="order/6",
            customer_id=1,
        )
    assert [r.method for r in sandbox.requests] == ["POST", "POST"]
    with pytest.raises(ConfigurationError):
        await connector.create_order([], idempotency_key="order/7")
    with pytest.raises(ConfigurationError):
        await connector.create_order([{"title": "A", "price": "1"}], idempotency_key="")
    assert sandbox.effects("shopify") == []


def test_order_and_draft_lists_page_by_since_id(clock: FakeClock) -> None:
    """Over plain HTTP: ``GET /orders.json`` lists orders in ascending id order, ``since_id``
    and ``limit`` page them, ``status=bogus`` is 400; ``DELETE`` of an unknown draft order is
    404 with Shopify's string ``errors``."""
    simulator = ShopifySimulator(access_tokens=[TOKEN], clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        url = sandbox.base_url("shopify") + "/admin/api/2025-01"
        auth = {"x-shopify-access-token": TOKEN}
        line = {"title": "Lamp", "price": "5.00", "quantity": 1}
        with httpx.Client(headers=auth) as http:
            made = [
                http.post(f"{url}/orders.json", json={"order": {"line_items": [line]}}).json()
                for _ in range(3)
            ]
            first = http.get(f"{url}/orders.json", params={"status": "any", "limit": 2})
            ids = [o["order"]["id"] for o in made]
            rest = http.get(f"{url}/orders.json", params={"since_id": ids[1], "fields": "id,name"})
            bogus = http.get(f"{url}/orders.json", params={"status": "bogus"})
            gone = http.delete(f"{url}/draft_orders/123.json")
    assert [o["order"]["name"] for o in made] == ["#1001", "#1002", "#1003"]
    assert [o["id"] for o in first.json()["orders"]] == ids[:2]
    assert rest.json() == {"orders": [{"id": ids[2], "name": "#1003"}]}
    assert bogus.status_code == 400
    assert gone.status_code == 404
    assert gone.json() == {"errors": "Not Found"}


def test_raw_answers_have_shopifys_shapes_and_headers(clock: FakeClock) -> None:
    """Over plain HTTP: 401 and 404 carry a string ``errors``, a duplicate email a field-keyed
    422, every answer ``X-Shopify-Shop-Api-Call-Limit: used/40``, and a full bucket a 429 with
    a float ``Retry-After``."""
    simulator = ShopifySimulator(access_tokens=[TOKEN], clock=clock.monotonic)
    with ProviderSandbox([simulator]) as sandbox:
        url = sandbox.base_url("shopify") + "/admin/api/2025-01"
        auth = {"x-shopify-access-token": TOKEN}
        body = {"customer": {"email": "joan@example.com"}}
        with httpx.Client() as http:
            unauthorized = http.post(f"{url}/customers.json", json=body)
            created = http.post(f"{url}/customers.json", json=body, headers=auth)
            taken = http.post(f"{url}/customers.json", json=body, headers=auth)
            missing = http.get(f"{url}/nothing.json", headers=auth)
            simulator.fill(40)
            refused = http.post(f"{url}/customers.json", json=body, headers=auth)
    assert unauthorized.status_code == 401
    assert isinstance(unauthorized.json()["errors"], str)
    assert unauthorized.headers[LIMIT_HEADER] == "1/40"
    assert created.status_code == 201
    assert created.json()["customer"]["email"] == "joan@example.com"
    assert created.headers[LIMIT_HEADER] == "2/40"
    assert taken.status_code == 422
    assert taken.json() == {"errors": {"email": ["has already been taken"]}}
    assert missing.status_code == 404
    assert missing.json() == {"errors": "Not Found"}
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "0.5"
    assert refused.headers[LIMIT_HEADER] == "40/40"
    assert "Exceeded 2 calls per second" in refused.json()["errors"]


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN`` and ``ANTIFRAGILE_SHOPIFY_BASE_URL`` configure the
    connector; without either it refuses to start; ``api_version`` picks the path."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/shopify/")
    monkeypatch.setenv(ACCESS_TOKEN_ENV, "shpat_from_env")
    connector = ShopifyConnector(api_version="2024-10")
    assert connector.base_url == "http://127.0.0.1:9/shopify"
    assert connector.api_version == "2024-10"
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        ShopifyConnector()
    monkeypatch.delenv(ACCESS_TOKEN_ENV)
    with pytest.raises(ConfigurationError):
        ShopifyConnector(base_url="http://127.0.0.1:9")


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_customer(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request -- latency, a 5xx, a 429 with Retry-After,
    a reset, a hang, an ambiguous failure (acted, answer lost by reset or hang) -- ends with the
    call succeeding and exactly one customer (the email is the customer's natural key). A
    malformed 200 is a retryable UpstreamUnavailableError (a durable job tries again); the next
    call makes the one customer."""
    sandbox.faults("shopify", CREATE, script=[FAULT_KINDS[kind]])
    if kind == "malformed":
        with pytest.raises(UpstreamUnavailableError) as caught:
            await connect().create_customer(email="ada@example.com")
        assert caught.value.retryable
    await connect().create_customer(email="ada@example.com")
    assert len(customer_effects(sandbox)) == 1
