"""Orders, draft orders and inventory levels over Shopify's GraphQL Admin API (the connector's
default) against the sandbox, over real HTTP.

Faults are set on one GraphQL operation (``POST .../graphql.json orderCreate``), so a create
can lose its answer while the lookup that reconciles it works. Policies run on a FakeClock; the
simulator's cost bucket refills on the same clock. The sandbox's effect record is the ground
truth for "how many orders were created".
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from antifragile import FakeClock, InvalidRequestError, RateLimitedError
from antifragile.connectors import InventoryLevel, OutcomeUnknownError
from antifragile.connectors._shopify import API_ENV
from antifragile.sandbox import FlakyServer, ProviderFault, ProviderSandbox, ShopifySimulator
from tests.integration._faults import FAULT_KINDS, GATEWAY_FAULTS
from tests.integration._shopify import Connect, connectors

TOKEN = "shpat_graphql_orders"
GRAPHQL = "POST /admin/api/{version}/graphql.json"
ORDER_CREATE = f"{GRAPHQL} orderCreate"
ORDERS = f"{GRAPHQL} orders"
DRAFT_CREATE = f"{GRAPHQL} draftOrderCreate"
DRAFT_ORDERS = f"{GRAPHQL} draftOrders"
DRAFT_DELETE = f"{GRAPHQL} draftOrderDelete"
NODES = f"{GRAPHQL} nodes"
LAMP = {"title": "Lamp", "price": "5.00", "quantity": 1}


@pytest.fixture
def simulator(clock: FakeClock) -> ShopifySimulator:
    return ShopifySimulator(
        access_tokens=[TOKEN],
        cost_bucket=1000,
        restore_rate=50,
        clock=clock.monotonic,
        inventory=[(11, 1, 5), (12, 1, 0), (11, 2, 7)],
    )


@pytest.fixture
def sandbox(simulator: ShopifySimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connect]:
    monkeypatch.delenv(API_ENV, raising=False)
    async with connectors(sandbox, clock, TOKEN) as factory:
        yield factory


def roots(sandbox: ProviderSandbox) -> list[str]:
    """The root field of each GraphQL request, in order (``orderCreate``, ``orders``...)."""
    found = []
    for request in sandbox.requests:
        query = request.json()["query"]
        head = query.split("{", 2)[1]
        found.append(head.strip().split("(")[0].split()[0])
    return found


def effects(sandbox: ProviderSandbox, key: str) -> list[Any]:
    """The effects of creates of *key* (``order``, ``draft_order``) through GraphQL."""
    return [
        e for e in sandbox.effects("shopify", GRAPHQL) if key in e.data and "id" not in e.data[key]
    ]


async def test_create_order_is_order_create_tagged_with_the_key(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``create_order`` sends ``orderCreate`` with the key as the ``antifragile-key`` custom
    attribute, the price as a ``MoneyBagInput``, the customer associated by global id and the
    receipt option; the order comes back with its number and name; ``find_order`` finds it."""
    shopify = connect()
    customer = await shopify.create_customer(email="ada@example.com")
    order = await shopify.create_order(
        [{"title": "Radio", "price": "19.50", "quantity": 2}],
        idempotency_key="order/7",
        customer_id=customer.id,
        tags=["web", "vip"],
        financial_status="pending",
    )
    body = sandbox.requests[-1].json()
    assert body["query"].startswith("mutation orderCreate(")
    sent = body["variables"]["order"]
    assert sent["lineItems"] == [
        {
            "title": "Radio",
            "priceSet": {"shopMoney": {"amount": "19.50", "currencyCode": "USD"}},
            "quantity": 2,
        }
    ]
    assert sent["customer"] == {"toAssociate": {"id": customer.gid}}
    assert sent["customAttributes"] == [{"key": "antifragile-key", "value": "order/7"}]
    assert sent["financialStatus"] == "PENDING"
    assert body["variables"]["options"] == {"sendReceipt": False}
    assert order.name == "#1001"
    assert not order.found_existing
    assert order.data["id"] == f"gid://shopify/Order/{order.id}"
    assert order.data["tags"] == ["web", "vip"]
    assert order.data["totalPriceSet"]["shopMoney"]["amount"] == "39.00"
    (effect,) = effects(sandbox, "order")
    assert int(effect.id) == order.id
    found = await shopify.find_order("order/7")
    assert found is not None
    assert (found.id, found.found_existing) == (order.id, True)
    assert await shopify.find_order("order/8") is None


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_order(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault on the first ``orderCreate`` -- latency, a 5xx in Shopify's format, a 429,
    a reset, a hang, a malformed 200, an ambiguous failure (created, answer lost) -- ends with
    the call succeeding and exactly one order: what may have been created is looked up by its
    key before anything is sent again; what surely was not is sent again."""
    sandbox.faults("shopify", ORDER_CREATE, script=[FAULT_KINDS[kind]])
    order = await connect().create_order([LAMP], idempotency_key="order/1")
    (effect,) = effects(sandbox, "order")
    assert order.id == int(effect.id)
    creates = roots(sandbox).count("orderCreate")
    if kind.startswith("ambiguous"):
        assert order.found_existing
        assert creates == 1
    elif kind in ("reset", "hang", "malformed"):
        assert not order.found_existing
        assert roots(sandbox) == ["orderCreate", "orders", "orders", "orderCreate"]
    else:
        assert "orders" not in roots(sandbox)


async def test_ambiguous_order_whose_lookup_fails_is_outcome_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """The order is created and its answer lost, and the ``orders`` lookup keeps failing: the
    order may exist, so it is not sent again -- a non-retryable OutcomeUnknownError carrying
    the key."""
    sandbox.faults("shopify", ORDER_CREATE, script=[ProviderFault.ambiguous()])
    sandbox.faults("shopify", ORDERS, chaos=[(1.0, ProviderFault.error(503))])
    with pytest.raises(OutcomeUnknownError) as caught:
        await connect().create_order([LAMP], idempotency_key="order/3")
    assert caught.value.reconcile_key == "order/3"
    assert not caught.value.retryable
    assert len(effects(sandbox, "order")) == 1
    assert roots(sandbox).count("orderCreate") == 1


async def test_check_first_returns_the_order_an_earlier_attempt_made(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``check_first`` looks the key up before sending: an earlier attempt's order is returned
    and no second ``orderCreate`` is sent."""
    shopify = connect()
    first = await shopify.create_order([LAMP], idempotency_key="order/4")
    again = await shopify.create_order([LAMP], idempotency_key="order/4", check_first=True)
    assert (again.id, again.found_existing) == (first.id, True)
    assert roots(sandbox) == ["orderCreate", "orders"]
    assert len(effects(sandbox, "order")) == 1


async def test_lookup_reads_pages_newest_first_until_older_than_the_call(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """The lookup reads ``orders`` newest first 50 a page and follows ``endCursor``: an order
    made 60 creates earlier is found on the second page; a lookup since a later time stops
    after the first page, whose orders are older."""
    shopify = connect()
    wanted = await shopify.create_order([LAMP], idempotency_key="order/old")
    for n in range(60):
        await shopify.create_order([LAMP], idempotency_key=f"order/{n}")
    found = await shopify.find_order("order/old")
    assert found is not None
    assert found.id == wanted.id
    pages = [r.json()["variables"] for r in sandbox.requests if "orders(" in r.json()["query"]]
    assert [p["after"] is None for p in pages] == [True, False]
    # a page that reaches back before *since* is the last one read
    looked = len(sandbox.requests)
    assert await shopify.find_order("order/old", since=time.time() + 3600) is None
    assert len(sandbox.requests) == looked + 1


async def test_user_errors_are_invalid_request_not_retried_nor_looked_up(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``userErrors`` (``OrderCreateUserError`` with a code) mean Shopify refused the order: an
    InvalidRequestError with the field path, message and code; one request, no lookup."""
    with pytest.raises(InvalidRequestError) as caught:
        await connect().create_order(
            [{"title": "Lamp", "price": "x", "quantity": 1}], idempotency_key="order/5"
        )
    assert "order.lineItems: lineItems price is invalid (INVALID)" in str(caught.value)
    assert not caught.value.retryable
    assert roots(sandbox) == ["orderCreate"]
    assert effects(sandbox, "order") == []


async def test_throttled_order_create_waits_for_the_bucket_then_creates_once(
    sandbox: ProviderSandbox, simulator: ShopifySimulator, connect: Connect, clock: FakeClock
) -> None:
    """With 4 points left, ``orderCreate`` (10) is answered ``THROTTLED`` (nothing created);
    the connector waits (10 - 4) / 50 = 0.12 s for the bucket and sends it again -- no lookup,
    one order; the limiter holds Shopify's figures."""
    simulator.fill_cost(4)
    shopify = connect()
    await shopify.create_order([LAMP], idempotency_key="order/9")
    assert roots(sandbox) == ["orderCreate", "orderCreate"]
    assert sum(clock.sleeps) == pytest.approx(0.12, abs=0.021)
    assert len(effects(sandbox, "order")) == 1
    assert shopify.policy.rate is not None
    assert (shopify.policy.rate.burst, shopify.policy.rate.rate) == (1000.0, 50.0)


async def test_an_empty_bucket_that_never_refills_is_rate_limited(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket restored too slowly for the limiter's ``max_wait`` ends in a retryable
    RateLimitedError, nothing created and no lookup (a refusal is not ambiguous)."""
    monkeypatch.delenv(API_ENV, raising=False)
    slow = ShopifySimulator(
        access_tokens=[TOKEN], cost_bucket=1000, restore_rate=0.01, clock=clock.monotonic
    )
    slow.fill_cost(0)
    with ProviderSandbox([slow]) as running:
        async with connectors(running, clock, TOKEN) as factory:
            with pytest.raises(RateLimitedError) as caught:
                await factory().create_order([LAMP], idempotency_key="order/1")
        assert caught.value.retryable
        assert "orders" not in roots(running)
    assert slow.orders == []


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_draft_order(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """The same for ``draftOrderCreate`` with a reconcile key (the key in ``customAttributes``,
    the lookup ``draftOrders`` newest first): exactly one draft order whatever the fault."""
    sandbox.faults("shopify", DRAFT_CREATE, script=[FAULT_KINDS[kind]])
    draft = await connect().create_draft_order([LAMP], reconcile_key="cart/42", note="by phone")
    (effect,) = effects(sandbox, "draft_order")
    assert draft["legacyResourceId"] == effect.id
    assert {"name": "antifragile-key", "value": "cart/42"} in effect.data["draft_order"][
        "note_attributes"
    ]
    sent_once = kind == "latency" or kind.startswith("ambiguous")
    assert roots(sandbox).count("draftOrderCreate") == (1 if sent_once else 2)
    assert ("draftOrders" in roots(sandbox)) == (kind not in ("latency", "5xx", "429"))


async def test_draft_order_without_a_key_is_outcome_unknown_after_an_ambiguous_failure(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Without a key a draft order cannot be looked up: a lost answer is a non-retryable
    OutcomeUnknownError and nothing is sent again."""
    sandbox.faults("shopify", DRAFT_CREATE, script=[ProviderFault.ambiguous()])
    with pytest.raises(OutcomeUnknownError) as caught:
        await connect().create_draft_order([LAMP])
    assert not caught.value.retryable
    assert roots(sandbox) == ["draftOrderCreate"]
    assert len(effects(sandbox, "draft_order")) == 1


async def test_draft_order_customer_and_delete_is_idempotent(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A draft for a customer is ``purchasingEntity.customerId``; ``delete_draft_order`` by
    number or global id is ``draftOrderDelete``: True, then False (a ``userErrors`` entry on
    ``id``: the draft is gone) -- one delete effect. A bad line is an InvalidRequestError."""
    shopify = connect()
    customer = await shopify.create_customer(email="hedy@example.com")
    draft = await shopify.create_draft_order(
        [{"title": "Radio", "price": "19.50", "quantity": 2}], customer_id=customer.id
    )
    sent = sandbox.requests[-1].json()["variables"]["input"]
    assert sent["purchasingEntity"] == {"customerId": customer.gid}
    assert sent["lineItems"][0]["originalUnitPrice"] == "19.50"
    assert draft["totalPriceSet"]["shopMoney"]["amount"] == "39.00"
    assert draft["customer"] == {"id": customer.gid}
    assert await shopify.delete_draft_order(draft["id"]) is True
    assert await shopify.delete_draft_order(int(draft["legacyResourceId"])) is False
    deletes = [
        e
        for e in sandbox.effects("shopify", GRAPHQL)
        if e.data == {"draft_order": {"id": int(draft["legacyResourceId"])}}
    ]
    assert len(deletes) == 1
    assert await shopify.find_draft_order("cart/1") is None
    with pytest.raises(InvalidRequestError) as caught:
        await shopify.create_draft_order([{"title": "", "price": "1", "quantity": 1}])
    assert "input.lineItems" in str(caught.value)


async def test_inventory_levels_are_a_nodes_query(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``inventory_levels`` reads ``nodes(ids:)`` of inventory items (or locations) with their
    ``inventoryLevels`` and the ``available`` quantity, filtered by the other set."""
    shopify = connect()
    levels = await shopify.inventory_levels(inventory_item_ids=[11])
    assert levels == [InventoryLevel(11, 1, 5), InventoryLevel(11, 2, 7)]
    assert await shopify.inventory_levels(location_ids=[1], inventory_item_ids=[12]) == [
        InventoryLevel(12, 1, 0)
    ]
    assert await shopify.inventory_levels(location_ids=[2]) == [InventoryLevel(11, 2, 7)]
    assert await shopify.inventory_levels(inventory_item_ids=[99]) == []
    first = sandbox.requests[0].json()
    assert first["variables"] == {"ids": ["gid://shopify/InventoryItem/11"], "first": 50}
    assert set(roots(sandbox)) == {"nodes"}


@pytest.mark.parametrize("kind", ["5xx", "429", "reset", "hang", "latency"])
async def test_inventory_levels_survive_transient_faults(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """A read is replayed after any transient fault: the levels come back."""
    sandbox.faults("shopify", NODES, script=[FAULT_KINDS[kind]])
    assert await connect().inventory_levels(inventory_item_ids=[12]) == [InventoryLevel(12, 1, 0)]


def test_header_names_keep_shopifys_casing_on_the_wire(clock: FakeClock) -> None:
    """Read off the socket, not through a client that folds case: REST and GraphQL answers
    say ``Content-Type``, REST ones ``X-Shopify-Shop-Api-Call-Limit`` (401, 201, 422 and 429,
    which also has ``Retry-After``) -- as Shopify writes them."""
    simulator = ShopifySimulator(access_tokens=[TOKEN], clock=clock.monotonic)
    with ProviderSandbox([simulator]) as running:
        base = running.base_url("shopify")
        host, _, port = base.split("//")[1].split("/")[0].partition(":")

        def heads(path: str, body: bytes, token: str = TOKEN) -> list[str]:
            request = (
                f"POST /shopify/admin/api/2025-01/{path} HTTP/1.1\r\nHost: {host}\r\n"
                f"X-Shopify-Access-Token: {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(request)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            return [line.partition(":")[0] for line in head[1:]]

        customer = b'{"customer": {"email": "joan@example.com"}}'
        created = heads("customers.json", customer)
        taken = heads("customers.json", customer)
        refused = heads("customers.json", customer, token="shpat_wrong")
        graphql = heads("graphql.json", b'{"query": "{ customers(first: 1) { nodes { id } } }"}')
        simulator.fill(40)
        limited = heads("customers.json", customer)
    for names in (created, taken, refused, limited):
        assert "X-Shopify-Shop-Api-Call-Limit" in names
        assert "Content-Type" in names
    assert "Content-Type" in graphql
    assert "Retry-After" in limited


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_a_gateway_answer_is_an_unknown_outcome_when_nothing_can_be_looked_up(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, gateway: str
) -> None:
    """A bodiless 502 or an HTML 504 from a gateway is not Shopify speaking: the order may
    exist. With every answer a gateway's, the lookup fails too -- a non-retryable
    OutcomeUnknownError carrying the key, after one ``orderCreate``."""
    monkeypatch.delenv(API_ENV, raising=False)
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with connectors(server.url, clock, TOKEN) as factory:
            with pytest.raises(OutcomeUnknownError) as caught:
                await factory().create_order([LAMP], idempotency_key="order/gw")
        sent = [json.loads(r.body)["query"].split("(")[0] for r in server.requests]
    assert caught.value.reconcile_key == "order/gw"
    assert not caught.value.retryable
    assert sent.count("mutation orderCreate") == 1
