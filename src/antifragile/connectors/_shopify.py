"""Shopify Admin API, over GraphQL by default or REST: customers (exactly once, by email),
orders and draft orders (exactly once, by reconciliation) and inventory levels.

::

    async with ShopifyConnector() as shopify:         # ANTIFRAGILE_SHOPIFY_* from the environment
        customer = await shopify.create_customer(email="ada@example.com", first_name="Ada")
        draft = await shopify.create_draft_order(
            [{"title": "Gift card", "price": "25.00", "quantity": 1}], customer_id=customer.id
        )

**Configuration.** ``ANTIFRAGILE_SHOPIFY_BASE_URL`` is the shop's address
(``https://{shop}.myshopify.com``; point it at ``{sandbox.url}/shopify`` or any stand-in
server) and ``ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN`` the Admin API access token, sent as
``X-Shopify-Access-Token``. Arguments to :class:`ShopifyConnector` override both; *api_version*
(``2025-01`` by default) picks the ``/admin/api/{version}`` path.

**API.** *api* (``ANTIFRAGILE_SHOPIFY_API``; ``graphql`` by default, or ``rest``) picks the
Admin API every call goes through: GraphQL at ``POST /admin/api/{version}/graphql.json``
(``customerCreate``, ``customers``, ``orderCreate``, ``orders``, ``draftOrderCreate``,
``draftOrders``, ``draftOrderDelete``, ``nodes`` of inventory items or locations with their
``inventoryLevels``), or REST (``customers.json``, ``orders.json``, ``draft_orders.json``,
``inventory_levels.json``).

**GraphQL cost**: Shopify limits GraphQL by calculated query cost, a bucket of points
refilled at a restore rate. The policy's limiter counts points (1000, 50 per
second, until Shopify says otherwise); each call reserves its cost (10 for a mutation,
``2 + first`` for a connection, ``1 + ids * (2 + 50)`` for inventory levels), and every
answer's ``extensions.cost.throttleStatus`` sets
the limiter's size, pace and tokens to ``maximumAvailable``, ``restoreRate`` and
``currentlyAvailable``. A ``THROTTLED`` answer (HTTP 200, ``errors[].extensions.code``) is sent
again once the bucket has refilled -- the next reservation waits ``(requested cost - currently
available) / restore rate`` -- up to 5 times, then :class:`~antifragile.RateLimitedError`.
``userErrors`` are :class:`~antifragile.InvalidRequestError` (Shopify refused the input: not
retried, not looked up; a taken email excepted, below, and a draft order already deleted).
A GraphQL query is a ``POST`` but a read: it is replayed after any transient failure.

**Default policy** (:func:`shopify_policy`): Shopify's REST limit is a leaky bucket of 40
requests per app and shop that leaks 2 per second, so a token bucket of 2 per second with a
burst of 40 paces calls; the ``X-Shopify-Shop-Api-Call-Limit: used/40`` header of every answer
clamps the local tokens to what is left in Shopify's bucket (other apps and processes spend it
too), so the client slows down before Shopify answers 429, and a 429's ``Retry-After`` (float
seconds) pauses it. Up to 5 attempts with exponential back-off from 0.5 s (capped at 10 s, full
jitter), ``Retry-After`` honoured; 10 s per attempt, 60 s per call; a circuit breaker for the
provider.

**Errors** are the antifragile taxonomy: 401/403 :class:`~antifragile.AuthenticationError`,
400/422 :class:`~antifragile.InvalidRequestError` (with Shopify's field errors in the message:
``email has already been taken``), 404 :class:`~antifragile.NotFoundError`, 402 (frozen shop)
and 423 (locked shop) a :class:`~antifragile.PermanentError`, 429
:class:`~antifragile.RateLimitedError`, 5xx :class:`~antifragile.UpstreamUnavailableError`,
lost connections and timeouts :class:`~antifragile.NetworkError` /
:class:`~antifragile.UpstreamTimeoutError`. A 2xx whose body is not the expected object is a
transient :class:`~antifragile.UpstreamUnavailableError`.

**Exactly once.** Shopify takes no idempotency key for customers, but a customer's email is a
natural key: Shopify refuses a second customer with the same email with 422 ``{"errors":
{"email": ["has already been taken"]}}`` (REST) or the ``userErrors`` entry "Email has already
been taken" on ``email`` (GraphQL). :meth:`ShopifyConnector.create_customer` builds on it:

* sending the same customer again can never create a second one, so the create is replayed
  after a 5xx or an *ambiguous* failure (the connection drops or times out after Shopify may
  have created the customer);
* a 422 "has already been taken" on the email means the customer exists -- created by an
  earlier attempt whose answer was lost, or before -- so the connector looks it up
  (``GET /customers/search.json?query=email:...``) and returns it, with
  ``found_existing=True``;
* when the attempts run out on an ambiguous failure or a 5xx, the connector looks the email up
  once more before giving up: a customer that exists is returned, otherwise the (retryable)
  error goes to the caller, and a durable job's retry starts over -- still safe, for the same
  reason.

Every path ends with exactly one customer per email. The price: "create" means "create or
return the customer with this email" -- an existing customer's other fields are not updated.
If Shopify says the email is taken but the search does not find it yet (Shopify's search index
lags behind writes), a retryable :class:`~antifragile.TransientError` is raised so that a later
try finds it.

Orders and draft orders have no natural key, REST takes no idempotency key and Shopify's
``@idempotent`` directive does not cover ``orderCreate`` nor ``draftOrderCreate`` (only
inventory and refund mutations, from API version 2026-01), so
:meth:`~ShopifyConnector.create_order` and :meth:`~ShopifyConnector.create_draft_order` tag
each one with the caller's key -- the custom attribute (REST: ``note_attributes`` entry)
``antifragile-key``, one datum under two names -- and reconcile instead of resending blindly:

* the create is sent again in-process only when it surely was not sent (a connection never
  made, a 429);
* after an ambiguous failure (a lost answer, a timeout, a 5xx, a 2xx that does not parse) the
  connector lists what was created since the call began (GraphQL ``orders`` / ``draftOrders``
  newest first, ``sortKey: CREATED_AT`` / ``UPDATED_AT`` with ``reverse: true``, 50 a page,
  until one older than the call; REST ``GET /orders.json?status=any&created_at_min=..`` or
  ``GET /draft_orders.json?updated_at_min=..``, paged by ``since_id``) and looks for the
  key: found, that order is returned (``found_existing=True``); absent, it waits
  *reconcile_grace* seconds and looks once more, then sends again -- up to
  *reconcile_rounds* sends;
* a lookup that fails turns the ambiguous failure into
  :class:`~antifragile.connectors.OutcomeUnknownError` (not retryable: a durable job stops
  rather than create a second order); when the last send failed and the lookup shows nothing
  was created, that (retryable) failure is raised as it is;
* ``check_first=True`` looks the key up *before* the first send -- pass it on a durable job's
  later attempts (``ctx.attempt > 1``), when an earlier attempt may have created the order and
  died before recording it.

A draft order created without a *reconcile_key* cannot be looked up: after an ambiguous failure
it raises :class:`~antifragile.connectors.OutcomeUnknownError` at once.
:meth:`~ShopifyConnector.delete_draft_order` (a saga's compensation) is idempotent: deleting
twice, or a draft already gone, answers ``False`` the second time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from antifragile.connectors import _shopify_graphql as gql
from antifragile.connectors._base import HTTPConnector, masks_pii, required_from
from antifragile.connectors._outcome import (
    OutcomeUnknownError,
    outcome_unknown,
    shopify_error_answer,
)
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import (
    SYSTEM_CLOCK,
    Clock,
    Exponential,
    Policy,
    Retry,
    TokenBucket,
)

BASE_URL_ENV = "ANTIFRAGILE_SHOPIFY_BASE_URL"
ACCESS_TOKEN_ENV = "ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN"
API_ENV = "ANTIFRAGILE_SHOPIFY_API"
DEFAULT_API_VERSION = "2025-01"
PROVIDER = "shopify"

#: the APIs the connector speaks (``api=``): the GraphQL Admin API, or the legacy REST one
GRAPHQL = "graphql"
REST = "rest"

#: how many ``THROTTLED`` answers one GraphQL call waits out before it gives up
_THROTTLED_ROUNDS = 5

#: operation names in errors and events
CREATE_CUSTOMER = "create_customer"
SEARCH_CUSTOMERS = "search_customers"
CREATE_DRAFT_ORDER = "create_draft_order"
LIST_DRAFT_ORDERS = "list_draft_orders"
CREATE_ORDER = "create_order"
LIST_ORDERS = "list_orders"
DELETE_DRAFT_ORDER = "delete_draft_order"
INVENTORY_LEVELS = "inventory_levels"

_TAKEN = "has already been taken"

#: GraphQL lookups: (query, connection field, time field, operation name)
ORDERS_QUERY = (gql.ORDERS, "orders", "createdAt", LIST_ORDERS)
DRAFT_ORDERS_QUERY = (gql.DRAFT_ORDERS, "draftOrders", "updatedAt", LIST_DRAFT_ORDERS)

#: the ``note_attributes`` name an order's (or draft order's) reconcile key is stored under
RECONCILE_ATTRIBUTE = "antifragile-key"

#: a lookup's page size (Shopify's maximum) and how many pages it reads at most
_PAGE = 250
_MAX_PAGES = 20


def shopify_policy(
    *, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0, api: str = GRAPHQL
) -> Policy:
    """The default policy of :class:`ShopifyConnector` (see the module docs): its limiter
    counts cost points (1000, restored at 50 per second, until Shopify's ``throttleStatus``
    says otherwise) for the GraphQL API, requests (40, leaking 2 per second) for REST."""
    bucket = (
        TokenBucket(50.0, burst=1000.0, max_wait=30.0)
        if api == GRAPHQL
        else TokenBucket(2.0, burst=40.0, max_wait=30.0)
    )
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=bucket,
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class ShopifyCustomer:
    """A Shopify customer: its ``id`` and ``email``, Shopify's whole object in ``data``.

    ``found_existing`` is true when the customer was not returned by the create's own answer
    but found by email (it existed already, or an earlier attempt created it and its answer was
    lost).
    """

    id: int
    email: str | None
    data: dict[str, Any] = field(repr=False)
    found_existing: bool = False

    @property
    def gid(self) -> str:
        """The GraphQL Admin API's id: ``gid://shopify/Customer/{id}``."""
        return f"gid://shopify/Customer/{self.id}"


@dataclass(frozen=True, slots=True)
class ShopifyOrder:
    """A Shopify order: its ``id`` and ``name`` (``#1001``), Shopify's whole object in ``data``.

    ``found_existing`` is true when the order was found by its key after an ambiguous failure
    (or by ``check_first``) rather than returned by the create's own answer.
    """

    id: int
    name: str | None
    data: dict[str, Any] = field(repr=False)
    found_existing: bool = False


@dataclass(frozen=True, slots=True)
class InventoryLevel:
    """The ``available`` quantity of an inventory item at a location."""

    inventory_item_id: int
    location_id: int
    available: int | None


def shopify_errors(detail: str | None) -> str | None:
    """Shopify's ``errors`` as one line (``email has already been taken``), from a body."""
    if not detail:
        return None
    try:
        body = json.loads(detail)
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, str):
        return errors
    if isinstance(errors, dict):
        parts: list[str] = []
        for name, messages in errors.items():
            listed = messages if isinstance(messages, list) else [messages]
            text = ", ".join(str(m) for m in listed)
            parts.append(text if name == "base" else f"{name} {text}")
        return "; ".join(parts) or None
    return None


def _email_taken(detail: str | None) -> bool:
    """Whether a 422 body says the email is taken."""
    if not detail:
        return False
    try:
        body = json.loads(detail)
    except ValueError:  # a truncated excerpt: look for the message itself
        return '"email":["' + _TAKEN in detail.replace(" ", "")
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return False
    messages = errors.get("email")
    listed = messages if isinstance(messages, list) else [messages]
    return any(isinstance(m, str) and _TAKEN in m for m in listed)


def _mapped(error: IntegrationError) -> None:
    """Add Shopify's ``errors`` to *error*'s message."""
    text = shopify_errors(error.detail)
    if text is None:
        return
    message = redact(f"{error.message}: {text}")
    error.message = message
    error.args = (message,)


class ShopifyConnector(HTTPConnector):
    """Shopify's Admin REST API behind a :class:`~antifragile.ResilientClient` (module docs).

    *access_token* and *base_url* default to ``ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN`` and
    ``ANTIFRAGILE_SHOPIFY_BASE_URL``; *api_version* is the Admin API version in every path;
    *policy* defaults to :func:`shopify_policy` on *clock* with *timeout* seconds per attempt.
    *client* is an ``httpx.AsyncClient`` to use (yours to close). *reconcile_window* (seconds
    before the call that a lookup scans, for clock skew), *reconcile_grace* and
    *reconcile_rounds* tune the reconciliation of orders and draft orders (module docs).
    """

    provider = PROVIDER

    def __init__(
        self,
        access_token: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
        reconcile_window: float = 600.0,
        reconcile_grace: float = 2.0,
        reconcile_rounds: int = 3,
        api: str | None = None,
    ) -> None:
        chosen = (api or os.environ.get(API_ENV) or GRAPHQL).strip().lower()
        if chosen not in (GRAPHQL, REST):
            raise ConfigurationError(f"api must be {GRAPHQL!r} or {REST!r}, got {chosen!r}")
        if reconcile_window < 0 or reconcile_grace < 0 or reconcile_rounds < 1:
            raise ConfigurationError(
                "reconcile_window and reconcile_grace must be >= 0 and reconcile_rounds >= 1"
            )
        token = required_from(
            access_token,
            ACCESS_TOKEN_ENV,
            needs="Shopify needs an access token",
            arg="access_token",
        )
        url = required_from(
            base_url, BASE_URL_ENV, needs="Shopify needs the shop's address", arg="base_url"
        )
        if not api_version or "/" in api_version:
            raise ConfigurationError(f"not an API version: {api_version!r}")
        self.base_url = url.rstrip("/")
        self.api_version = api_version
        self.api = chosen
        self.reconcile_window = float(reconcile_window)
        self.reconcile_grace = float(reconcile_grace)
        self.reconcile_rounds = int(reconcile_rounds)
        self._clock = clock
        self.policy = (
            policy
            if policy is not None
            else shopify_policy(clock=clock, timeout=timeout, api=chosen)
        )
        self._auth = {"x-shopify-access-token": token}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[token],
            not_processed=shopify_error_answer,
        )

    def _path(self, resource: str) -> str:
        return f"/admin/api/{self.api_version}/{resource}"

    async def _call(
        self,
        method: str,
        resource: str,
        operation: str,
        *,
        replay_safe: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Send one request; Shopify's JSON object (errors mapped, see the module docs)."""
        try:
            response = await self.client.request(
                method,
                self._path(resource),
                headers=self._auth,
                operation=operation,
                replay_safe=replay_safe,
                **kwargs,
            )
        except IntegrationError as exc:
            _mapped(exc)
            raise
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamUnavailableError(
                f"Shopify answered {response.status_code} without a JSON object (malformed body)",
                provider=PROVIDER,
                operation=operation,
                status=response.status_code,
                request_id=response.request.headers.get("x-request-id"),
                replay_safe=True,
                detail=response.text[:500],
            )
        return answer

    async def _graphql(
        self,
        document: str,
        variables: dict[str, Any],
        operation: str,
        *,
        cost: float,
        replay_safe: bool | None = None,
    ) -> dict[str, Any]:
        """Send one GraphQL document; its ``data`` (module docs: cost and ``THROTTLED``).

        *cost* points are reserved from the limiter before each send (the policy takes one of
        them). Every answer's ``throttleStatus`` sets the limiter to Shopify's bucket, so after
        a ``THROTTLED`` answer the next reservation waits
        ``(requested cost - currently available) / restore rate``."""
        if replay_safe is None and document.startswith("query"):
            replay_safe = True  # a read, though POSTed: sending it again changes nothing
        limiter = self.policy.rate
        wait = 0.0
        for _ in range(_THROTTLED_ROUNDS):
            if limiter is not None and cost > 1:
                await limiter.aacquire(cost - 1.0, operation=operation)
            elif wait > 0:
                await self._clock.asleep(wait)
            answer = await self._call(
                "POST",
                "graphql.json",
                operation,
                replay_safe=replay_safe,
                json={"query": document, "variables": variables},
            )
            gql.observe(limiter, answer, operation)
            if "THROTTLED" in gql.error_codes(answer):
                wait = gql.refill_wait(answer, cost)
                continue
            data = answer.get("data")
            if answer.get("errors") and not isinstance(data, dict):
                raise gql.query_errors(answer, operation, PROVIDER)
            if not isinstance(data, dict):
                raise UpstreamUnavailableError(
                    "Shopify answered without data (malformed body)",
                    provider=PROVIDER,
                    operation=operation,
                    status=200,
                    replay_safe=replay_safe is not False,
                    detail=json.dumps(answer)[:500],
                )
            return data
        raise RateLimitedError(
            f"Shopify throttled the query {_THROTTLED_ROUNDS} times (cost bucket empty)",
            provider=PROVIDER,
            operation=operation,
            status=200,
            retry_after=wait,
            replay_safe=True,
        )

    # -- customers ------------------------------------------------------------------------------

    @masks_pii("email", "phone", "extra")
    async def create_customer(
        self,
        *,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        phone: str | None = None,
        tags: Sequence[str] | None = None,
        note: str | None = None,
        verified_email: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ShopifyCustomer:
        """Create the customer with this *email*, or return the one that has it: exactly one.

        *extra* holds other fields of Shopify's customer object (``addresses``,
        ``metafields``...). Raises an :class:`~antifragile.IntegrationError` subclass when
        Shopify refuses the customer (see the module docs).
        """
        if not email:
            raise ConfigurationError("create_customer needs an email (its natural key)")
        fields: dict[str, Any] = dict(extra or {})
        optional: dict[str, Any] = {
            "first_name": first_name,
            "last_name": last_name,
            "phone": phone,
            "tags": None if tags is None else ", ".join(tags),
            "note": note,
            "verified_email": verified_email,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        fields["email"] = email
        if self.api == GRAPHQL:
            return await self._create_customer_graphql(email, fields)
        try:
            # replaying is safe: Shopify refuses a second customer with the same email
            answer = await self._call(
                "POST",
                "customers.json",
                CREATE_CUSTOMER,
                replay_safe=True,
                json={"customer": fields},
            )
        except InvalidRequestError as exc:
            if not _email_taken(exc.detail):
                raise
            return await self._taken(email, exc)
        except IntegrationError as exc:
            return await self._created_before(email, exc)
        customer = answer.get("customer")
        if not isinstance(customer, dict) or not isinstance(customer.get("id"), int):
            raise UpstreamUnavailableError(
                "Shopify answered without a customer (malformed body)",
                provider=PROVIDER,
                operation=CREATE_CUSTOMER,
                replay_safe=True,
                detail=json.dumps(answer)[:500],
            )
        return _customer(customer, found_existing=False)

    async def _create_customer_graphql(self, email: str, fields: dict[str, Any]) -> ShopifyCustomer:
        """``customerCreate``; a ``userErrors`` entry saying the email is taken leads to the
        customer that has it (module docs)."""
        try:
            # replaying is safe: Shopify refuses a second customer with the same email
            data = await self._graphql(
                gql.CUSTOMER_CREATE,
                {"input": gql.customer_input(fields)},
                CREATE_CUSTOMER,
                cost=gql.MUTATION_COST,
                replay_safe=True,
            )
        except IntegrationError as exc:
            return await self._created_before(email, exc)
        payload = data.get("customerCreate")
        payload = payload if isinstance(payload, dict) else {}
        user_errors = payload.get("userErrors")
        if isinstance(user_errors, list) and user_errors:
            refused = InvalidRequestError(
                redact(f"Shopify refused the customer: {gql.user_error_text(user_errors)}"),
                provider=PROVIDER,
                operation=CREATE_CUSTOMER,
                status=200,
                replay_safe=True,
                detail=json.dumps(user_errors)[:500],
            )
            if not gql.email_taken(user_errors):
                raise refused
            return await self._taken(email, refused)
        customer = payload.get("customer")
        if not isinstance(customer, dict) or gql.legacy_id(customer) is None:
            raise UpstreamUnavailableError(
                "Shopify answered without a customer (malformed body)",
                provider=PROVIDER,
                operation=CREATE_CUSTOMER,
                status=200,
                replay_safe=True,
                detail=json.dumps(data)[:500],
            )
        return _customer(customer, found_existing=False)

    async def _taken(self, email: str, refusal: IntegrationError) -> ShopifyCustomer:
        """The customer Shopify says has *email* already (*refusal* said so)."""
        existing = await self.find_customer_by_email(email)
        if existing is None:
            raise TransientError(
                f"Shopify says {email!r} is taken but the search does not find it yet",
                provider=PROVIDER,
                operation=CREATE_CUSTOMER,
                status=refusal.status,
                request_id=refusal.request_id,
                replay_safe=True,
                detail=refusal.detail,
            ) from refusal
        return existing

    async def _created_before(self, email: str, failure: IntegrationError) -> ShopifyCustomer:
        """After *failure* (every attempt made): the customer an attempt may have created,
        looked up by email, or *failure* raised when there is none (or it is a refusal)."""
        if isinstance(failure, RateLimitedError) or not failure.retryable:
            raise failure
        # ambiguous failure or 5xx after every attempt: did an attempt create it?
        try:
            existing = await self.find_customer_by_email(email)
        except IntegrationError:
            raise failure from None
        if existing is None:
            raise failure
        return existing

    @masks_pii("query")
    async def search_customers(self, query: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Customers matching Shopify's search *query* (``email:a@b.example``), at most *limit*
        (the GraphQL API's ``customers`` nodes, or REST's customer objects)."""
        if self.api == GRAPHQL:
            data = await self._graphql(
                gql.CUSTOMERS,
                {"first": limit, "query": query},
                SEARCH_CUSTOMERS,
                cost=gql.query_cost(limit),
            )
            connection = data.get("customers")
            nodes = connection.get("nodes") if isinstance(connection, dict) else None
            if not isinstance(nodes, list):
                raise UpstreamUnavailableError(
                    "Shopify answered without customers (malformed body)",
                    provider=PROVIDER,
                    operation=SEARCH_CUSTOMERS,
                    status=200,
                    replay_safe=True,
                    detail=json.dumps(data)[:500],
                )
            return [c for c in nodes if isinstance(c, dict)]
        answer = await self._call(
            "GET",
            "customers/search.json",
            SEARCH_CUSTOMERS,
            params={"query": query, "limit": limit},
        )
        customers = answer.get("customers")
        if not isinstance(customers, list):
            raise UpstreamUnavailableError(
                "Shopify answered without a customers list (malformed body)",
                provider=PROVIDER,
                operation=SEARCH_CUSTOMERS,
                replay_safe=True,
                detail=json.dumps(answer)[:500],
            )
        return [c for c in customers if isinstance(c, dict)]

    @masks_pii("email")
    async def find_customer_by_email(self, email: str) -> ShopifyCustomer | None:
        """The customer whose email is *email* (case-insensitive), or ``None``."""
        wanted = email.strip().lower()
        for customer in await self.search_customers(f"email:{email.strip()}", limit=10):
            found = customer.get("email")
            if isinstance(found, str) and found.lower() == wanted and _id_of(customer) is not None:
                return _customer(customer, found_existing=True)
        return None

    # -- draft orders and inventory -------------------------------------------------------------

    @masks_pii("extra")
    async def create_draft_order(
        self,
        line_items: Sequence[Mapping[str, Any]],
        *,
        customer_id: int | None = None,
        note: str | None = None,
        reconcile_key: str | None = None,
        check_first: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a draft order (``POST /draft_orders.json``); Shopify's ``draft_order``.

        *reconcile_key* is stored on the draft order as the ``note_attributes`` entry
        ``antifragile-key``: after an ambiguous failure the draft is looked up by it and
        returned, or sent again when absent (module docs). Without it, an ambiguous failure
        raises :class:`~antifragile.connectors.OutcomeUnknownError` (not retryable).
        """
        if not line_items:
            raise ConfigurationError("a draft order needs at least one line item")
        if self.api == GRAPHQL:
            return await self._create_draft_graphql(
                line_items, customer_id, note, reconcile_key, check_first, extra or {}
            )
        fields: dict[str, Any] = dict(extra or {})
        fields["line_items"] = [dict(line) for line in line_items]
        if customer_id is not None:
            fields["customer"] = {"id": customer_id}
        if note is not None:
            fields["note"] = note
        if reconcile_key is None:
            try:
                answer = await self._call(
                    "POST", "draft_orders.json", CREATE_DRAFT_ORDER, json={"draft_order": fields}
                )
            except IntegrationError as exc:
                unknown = outcome_unknown(exc, "")
                if unknown is exc:
                    raise
                raise unknown from exc
            draft = answer.get("draft_order")
            if not isinstance(draft, dict):
                raise OutcomeUnknownError(
                    "Shopify answered without a draft order (malformed body)",
                    provider=PROVIDER,
                    operation=CREATE_DRAFT_ORDER,
                    replay_safe=False,
                    detail=json.dumps(answer)[:500],
                )
            return draft
        _tag(fields, reconcile_key)
        draft, _ = await self._create_reconciled(
            self._rest_create("draft_orders", "draft_order", CREATE_DRAFT_ORDER, fields),
            lambda since: self._find("draft_orders", "draft_order", reconcile_key, since),
            reconcile_key,
            check_first=check_first,
        )
        return draft

    async def _create_draft_graphql(
        self,
        line_items: Sequence[Mapping[str, Any]],
        customer_id: int | str | None,
        note: str | None,
        key: str | None,
        check_first: bool,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        """``draftOrderCreate``, reconciled by *key* like the REST create (module docs)."""
        variables = {
            "input": gql.draft_input(
                line_items, key, customer_id=customer_id, note=note, extra=extra
            )
        }
        send = self._graphql_create(
            gql.DRAFT_ORDER_CREATE,
            variables,
            "draftOrderCreate",
            "draftOrder",
            CREATE_DRAFT_ORDER,
        )
        if key is None:
            try:
                return await send()
            except IntegrationError as exc:
                if not _maybe_created(exc):
                    raise
                unknown = outcome_unknown(exc, "")
                raise (
                    unknown if isinstance(unknown, OutcomeUnknownError) else _unknown(exc, "")
                ) from exc
        draft, _ = await self._create_reconciled(
            send,
            lambda since: self._find_graphql(DRAFT_ORDERS_QUERY, key, since),
            key,
            check_first=check_first,
        )
        return draft

    async def find_draft_order(
        self, reconcile_key: str, *, since: float | None = None
    ) -> dict[str, Any] | None:
        """The draft order whose ``antifragile-key`` note attribute is *reconcile_key*, among
        those updated since *since* (epoch seconds; every one when ``None``), or ``None``."""
        if self.api == GRAPHQL:
            return await self._find_graphql(DRAFT_ORDERS_QUERY, reconcile_key, since)
        return await self._find("draft_orders", "draft_order", reconcile_key, since)

    @masks_pii("email", "extra")
    async def create_order(
        self,
        line_items: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str,
        customer_id: int | None = None,
        email: str | None = None,
        tags: Sequence[str] | None = None,
        note: str | None = None,
        financial_status: str | None = None,
        send_receipt: bool = False,
        check_first: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> ShopifyOrder:
        """Create an order (``POST /orders.json``) exactly once per *idempotency_key*.

        The key is stored on the order as the ``note_attributes`` entry ``antifragile-key``;
        after an ambiguous failure the order is looked up by it before anything is sent again
        (module docs). *extra* holds other fields of Shopify's order object
        (``shipping_address``, ``transactions``...). Raises an
        :class:`~antifragile.IntegrationError` subclass when Shopify refuses the order, and
        :class:`~antifragile.connectors.OutcomeUnknownError` when it may exist and could not
        be looked up.
        """
        if not line_items:
            raise ConfigurationError("an order needs at least one line item")
        if not idempotency_key:
            raise ConfigurationError("create_order needs an idempotency_key to reconcile by")
        if self.api == GRAPHQL:
            variables = {
                "order": gql.order_input(
                    line_items,
                    idempotency_key,
                    customer_id=customer_id,
                    email=email,
                    tags=tags,
                    note=note,
                    financial_status=financial_status,
                    extra=extra or {},
                ),
                "options": {"sendReceipt": send_receipt},
            }
            node, found = await self._create_reconciled(
                self._graphql_create(
                    gql.ORDER_CREATE, variables, "orderCreate", "order", CREATE_ORDER
                ),
                lambda since: self._find_graphql(ORDERS_QUERY, idempotency_key, since),
                idempotency_key,
                check_first=check_first,
            )
            return _order(node, found_existing=found)
        fields: dict[str, Any] = dict(extra or {})
        fields["line_items"] = [dict(line) for line in line_items]
        optional: dict[str, Any] = {
            "customer": None if customer_id is None else {"id": customer_id},
            "email": email,
            "tags": None if tags is None else ", ".join(tags),
            "note": note,
            "financial_status": financial_status,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        fields["send_receipt"] = send_receipt
        _tag(fields, idempotency_key)
        order, found = await self._create_reconciled(
            self._rest_create("orders", "order", CREATE_ORDER, fields),
            lambda since: self._find("orders", "order", idempotency_key, since),
            idempotency_key,
            check_first=check_first,
        )
        return _order(order, found_existing=found)

    async def find_order(
        self, idempotency_key: str, *, since: float | None = None
    ) -> ShopifyOrder | None:
        """The order whose ``antifragile-key`` note attribute is *idempotency_key*, among those
        created since *since* (epoch seconds; every one when ``None``), or ``None``."""
        found = (
            await self._find_graphql(ORDERS_QUERY, idempotency_key, since)
            if self.api == GRAPHQL
            else await self._find("orders", "order", idempotency_key, since)
        )
        return None if found is None else _order(found, found_existing=True)

    def _rest_create(
        self, resource: str, wrapper: str, operation: str, fields: dict[str, Any]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """A send of *fields* under *wrapper* to ``POST {resource}.json``: the object made."""

        async def send() -> dict[str, Any]:
            answer = await self._call(
                "POST", f"{resource}.json", operation, replay_safe=False, json={wrapper: fields}
            )
            created = answer.get(wrapper)
            if not isinstance(created, dict) or not isinstance(created.get("id"), int):
                raise UpstreamUnavailableError(
                    f"Shopify answered without a {wrapper} (malformed body)",
                    provider=PROVIDER,
                    operation=operation,
                    status=201,
                    replay_safe=False,
                    detail=json.dumps(answer)[:500],
                )
            return created

        return send

    def _graphql_create(
        self,
        document: str,
        variables: dict[str, Any],
        mutation: str,
        field: str,
        operation: str,
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """A send of the create *mutation*: the *field* object of its payload (``userErrors``
        an InvalidRequestError, see :func:`gql.mutation_payload`)."""

        async def send() -> dict[str, Any]:
            data = await self._graphql(
                document, variables, operation, cost=gql.MUTATION_COST, replay_safe=False
            )
            return gql.mutation_payload(data, mutation, field, operation, PROVIDER)

        return send

    async def _create_reconciled(
        self,
        send: Callable[[], Awaitable[dict[str, Any]]],
        find: Callable[[float], Awaitable[dict[str, Any] | None]],
        key: str,
        *,
        check_first: bool,
    ) -> tuple[dict[str, Any], bool]:
        """*send* the create, reconciling ambiguous failures by *key* with *find* (module
        docs); the object and whether it was found existing."""
        started = self._clock.time()
        since = started - self.reconcile_window
        if check_first:
            existing = await find(since)
            if existing is not None:
                return existing, True
        failure: IntegrationError | None = None
        for _ in range(self.reconcile_rounds):
            try:
                return await send(), False
            except IntegrationError as exc:
                if not _maybe_created(exc):
                    raise
                failure = exc
            try:
                existing = await find(since)
                if existing is None and self.reconcile_grace > 0:
                    await self._clock.asleep(self.reconcile_grace)
                    existing = await find(since)
            except IntegrationError as lookup:
                unknown = outcome_unknown(failure, key)
                if not isinstance(unknown, OutcomeUnknownError):
                    unknown = _unknown(failure, key)
                unknown.give_up_reason = "reconcile_failed"
                raise unknown from lookup
            if existing is not None:
                return existing, True
            # not created: sending again is safe
        assert failure is not None
        raise failure

    async def _find(
        self, resource: str, wrapper: str, key: str, since: float | None
    ) -> dict[str, Any] | None:
        """The first ``{resource}`` carrying *key* in its note attributes (paged by
        ``since_id``), or ``None``."""
        operation = LIST_ORDERS if resource == "orders" else LIST_DRAFT_ORDERS
        params: dict[str, Any] = {"limit": _PAGE}
        if resource == "orders":
            params["status"] = "any"
        if since is not None:
            moment = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
            params["created_at_min" if resource == "orders" else "updated_at_min"] = moment
        cursor = 0
        for _ in range(_MAX_PAGES):
            answer = await self._call(
                "GET", f"{resource}.json", operation, params={**params, "since_id": cursor}
            )
            page = answer.get(resource)
            if not isinstance(page, list):
                raise UpstreamUnavailableError(
                    f"Shopify answered without a {resource} list (malformed body)",
                    provider=PROVIDER,
                    operation=operation,
                    replay_safe=True,
                    detail=json.dumps(answer)[:500],
                )
            for item in page:
                if isinstance(item, dict) and _carries(item, key):
                    return item
            ids = [i["id"] for i in page if isinstance(i, dict) and isinstance(i.get("id"), int)]
            if len(page) < _PAGE or not ids:
                return None
            cursor = max(ids)
        return None

    async def _find_graphql(
        self, lookup: tuple[str, str, str, str], key: str, since: float | None
    ) -> dict[str, Any] | None:
        """The newest order or draft order carrying *key* in its custom attributes, read newest
        first (``sortKey: CREATED_AT`` / ``UPDATED_AT``, ``reverse: true``) until one older than
        *since*; ``None`` when there is none. *lookup*: the query, its connection's field, the
        time field and the operation name."""
        document, field, moment, operation = lookup
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            data = await self._graphql(
                document,
                {"first": gql.LOOKUP_PAGE, "after": cursor},
                operation,
                cost=gql.query_cost(gql.LOOKUP_PAGE),
            )
            nodes, cursor = gql.connection(data, field, operation, PROVIDER)
            for node in nodes:
                if gql.carries(node, key):
                    return node
            stamps = [gql.stamp(n, moment) for n in nodes]
            older = since is not None and any(t is not None and t < since for t in stamps)
            if cursor is None or older:
                return None
        return None

    async def delete_draft_order(self, draft_order_id: int | str) -> bool:
        """Delete a draft order (``draftOrderDelete``, or REST ``DELETE
        /draft_orders/{id}.json``) by its number or global id: ``True`` when deleted, ``False``
        when Shopify does not know it (deleted already: a ``userErrors`` entry on ``id``, or
        404). Replayed when ambiguous: deleting twice has one effect."""
        if self.api == GRAPHQL:
            data = await self._graphql(
                gql.DRAFT_ORDER_DELETE,
                {"input": {"id": gql.gid("DraftOrder", draft_order_id)}},
                DELETE_DRAFT_ORDER,
                cost=gql.MUTATION_COST,
                replay_safe=True,
            )
            payload = data.get("draftOrderDelete")
            payload = payload if isinstance(payload, dict) else {}
            user_errors = payload.get("userErrors")
            if isinstance(user_errors, list) and user_errors:
                if gql.on_id(user_errors):
                    return False
                raise gql.refused(user_errors, DELETE_DRAFT_ORDER, PROVIDER)
            return True
        if isinstance(draft_order_id, str):
            draft_order_id = gql.legacy_id({"id": draft_order_id}) or -1
        try:
            await self._call(
                "DELETE", f"draft_orders/{int(draft_order_id)}.json", DELETE_DRAFT_ORDER
            )
        except NotFoundError:
            return False
        return True

    async def inventory_levels(
        self,
        *,
        inventory_item_ids: Iterable[int] = (),
        location_ids: Iterable[int] = (),
    ) -> list[InventoryLevel]:
        """Inventory levels of these items and/or locations (at least one filter)."""
        params: dict[str, str] = {}
        items = ",".join(str(i) for i in inventory_item_ids)
        locations = ",".join(str(i) for i in location_ids)
        if items:
            params["inventory_item_ids"] = items
        if locations:
            params["location_ids"] = locations
        if not params:
            raise ConfigurationError("inventory_levels needs inventory_item_ids or location_ids")
        if self.api == GRAPHQL:
            return await self._inventory_graphql(
                {int(i) for i in items.split(",") if i},
                {int(i) for i in locations.split(",") if i},
            )
        answer = await self._call("GET", "inventory_levels.json", INVENTORY_LEVELS, params=params)
        levels = answer.get("inventory_levels")
        if not isinstance(levels, list):
            raise UpstreamUnavailableError(
                "Shopify answered without inventory levels (malformed body)",
                provider=PROVIDER,
                operation=INVENTORY_LEVELS,
                replay_safe=True,
                detail=json.dumps(answer)[:500],
            )
        return [
            InventoryLevel(
                int(level["inventory_item_id"]),
                int(level["location_id"]),
                level.get("available") if isinstance(level.get("available"), int) else None,
            )
            for level in levels
            if isinstance(level, dict)
            and isinstance(level.get("inventory_item_id"), int)
            and isinstance(level.get("location_id"), int)
        ]

    async def _inventory_graphql(
        self, items: set[int], locations: set[int]
    ) -> list[InventoryLevel]:
        """``nodes(ids:)`` of the inventory items (or, without items, the locations), each with
        its ``inventoryLevels``; filtered by the other set when both are given."""
        ids = (
            [gql.gid("InventoryItem", i) for i in sorted(items)]
            if items
            else [gql.gid("Location", i) for i in sorted(locations)]
        )
        data = await self._graphql(
            gql.INVENTORY_LEVELS,
            {"ids": ids, "first": gql.LEVELS_PAGE},
            INVENTORY_LEVELS,
            cost=gql.nodes_cost(len(ids)),
        )
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise UpstreamUnavailableError(
                "Shopify answered without inventory levels (malformed body)",
                provider=PROVIDER,
                operation=INVENTORY_LEVELS,
                status=200,
                replay_safe=True,
                detail=json.dumps(data)[:500],
            )
        return [
            InventoryLevel(item, location, available)
            for node in nodes
            for item, location, available in gql.levels(node)
            if (not items or item in items) and (not locations or location in locations)
        ]

    def __repr__(self) -> str:
        return f"ShopifyConnector(base_url={self.base_url!r}, api_version={self.api_version!r})"


def _id_of(data: dict[str, Any]) -> int | None:
    """An object's numeric id: REST's ``id``, or the GraphQL object's legacy id."""
    raw = data.get("id")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else gql.legacy_id(data)


def _customer(data: dict[str, Any], *, found_existing: bool) -> ShopifyCustomer:
    email = data.get("email")
    ident = _id_of(data)
    assert ident is not None
    return ShopifyCustomer(
        ident,
        email if isinstance(email, str) else None,
        data,
        found_existing=found_existing,
    )


def _order(data: dict[str, Any], *, found_existing: bool) -> ShopifyOrder:
    name = data.get("name")
    ident = _id_of(data)
    assert ident is not None
    return ShopifyOrder(
        ident,
        name if isinstance(name, str) else None,
        data,
        found_existing=found_existing,
    )


def _tag(fields: dict[str, Any], key: str) -> None:
    """Store *key* as the ``antifragile-key`` note attribute of *fields* (once)."""
    attributes = [
        a
        for a in fields.get("note_attributes") or []
        if not (isinstance(a, Mapping) and a.get("name") == RECONCILE_ATTRIBUTE)
    ]
    attributes.append({"name": RECONCILE_ATTRIBUTE, "value": key})
    fields["note_attributes"] = attributes


def _carries(item: dict[str, Any], key: str) -> bool:
    attributes = item.get("note_attributes")
    if not isinstance(attributes, list):
        return False
    return any(
        isinstance(a, dict) and a.get("name") == RECONCILE_ATTRIBUTE and a.get("value") == key
        for a in attributes
    )


def _maybe_created(error: IntegrationError) -> bool:
    """Whether Shopify may have created the object although *error* was raised: a lost answer,
    a timeout, a 5xx or a 2xx that does not parse -- not a refusal, nor a failure to connect."""
    if isinstance(error, (RateLimitedError, PermanentError)) or not error.retryable:
        return False
    if error.status is not None and 200 <= error.status < 300:
        return True
    return not error.replay_safe


def _unknown(error: IntegrationError, key: str) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"outcome unknown, not sent again (reconcile with {key!r}): {error.message}",
        provider=error.provider,
        operation=error.operation,
        status=error.status,
        request_id=error.request_id,
        replay_safe=False,
        attempts=error.attempts,
        detail=error.detail,
        reconcile_key=key,
    )
