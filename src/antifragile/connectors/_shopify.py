"""Shopify Admin REST: customers (exactly once, by email), draft orders, inventory levels.

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

**Exactly once.** Shopify's REST API has no idempotency keys, but a customer's email is a
natural key: Shopify refuses a second customer with the same email with 422 ``{"errors":
{"email": ["has already been taken"]}}``. :meth:`ShopifyConnector.create_customer` builds on it:

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
try finds it. Draft orders have no natural key: :meth:`~ShopifyConnector.create_draft_order` is
retried only when the request was surely not sent; after an ambiguous failure (a lost answer, a
timeout, a 5xx) it raises :class:`~antifragile.connectors.OutcomeUnknownError` -- not retryable,
so a durable job stops instead of creating a second draft -- carrying the caller's
``reconcile_key`` (stored on the draft order's ``note_attributes``) to look it up by.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector
from antifragile.connectors._outcome import outcome_unknown
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
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
DEFAULT_API_VERSION = "2025-01"
PROVIDER = "shopify"

#: operation names in errors and events
CREATE_CUSTOMER = "create_customer"
SEARCH_CUSTOMERS = "search_customers"
CREATE_DRAFT_ORDER = "create_draft_order"
INVENTORY_LEVELS = "inventory_levels"

_TAKEN = "has already been taken"

#: the ``note_attributes`` name a draft order's reconcile key is stored under
RECONCILE_ATTRIBUTE = "antifragile-key"


def shopify_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`ShopifyConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(2.0, burst=40.0, max_wait=30.0),
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
    *client* is an ``httpx.AsyncClient`` to use (yours to close).
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
    ) -> None:
        token = access_token or os.environ.get(ACCESS_TOKEN_ENV)
        if not token:
            raise ConfigurationError(
                f"Shopify needs an access token: pass access_token= or set {ACCESS_TOKEN_ENV}"
            )
        url = base_url or os.environ.get(BASE_URL_ENV)
        if not url:
            raise ConfigurationError(
                f"Shopify needs the shop's address: pass base_url= or set {BASE_URL_ENV}"
            )
        if not api_version or "/" in api_version:
            raise ConfigurationError(f"not an API version: {api_version!r}")
        self.base_url = url.rstrip("/")
        self.api_version = api_version
        self.policy = policy if policy is not None else shopify_policy(clock=clock, timeout=timeout)
        self._auth = {"x-shopify-access-token": token}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[token],
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

    # -- customers ------------------------------------------------------------------------------

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
            existing = await self.find_customer_by_email(email)
            if existing is None:
                raise TransientError(
                    f"Shopify says {email!r} is taken but the search does not find it yet",
                    provider=PROVIDER,
                    operation=CREATE_CUSTOMER,
                    status=exc.status,
                    request_id=exc.request_id,
                    replay_safe=True,
                    detail=exc.detail,
                ) from exc
            return existing
        except (RateLimitedError, IntegrationError) as exc:
            if isinstance(exc, RateLimitedError) or not exc.retryable:
                raise
            # ambiguous failure or 5xx after every attempt: did an attempt create it?
            try:
                existing = await self.find_customer_by_email(email)
            except IntegrationError:
                raise exc from None
            if existing is None:
                raise
            return existing
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

    async def search_customers(self, query: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Customers matching Shopify's search *query* (``email:a@b.example``), at most *limit*."""
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

    async def find_customer_by_email(self, email: str) -> ShopifyCustomer | None:
        """The customer whose email is *email* (case-insensitive), or ``None``."""
        wanted = email.strip().lower()
        for customer in await self.search_customers(f"email:{email.strip()}", limit=10):
            found = customer.get("email")
            if (
                isinstance(found, str)
                and found.lower() == wanted
                and isinstance(customer.get("id"), int)
            ):
                return _customer(customer, found_existing=True)
        return None

    # -- draft orders and inventory -------------------------------------------------------------

    async def create_draft_order(
        self,
        line_items: Sequence[Mapping[str, Any]],
        *,
        customer_id: int | None = None,
        note: str | None = None,
        reconcile_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a draft order (``POST /draft_orders.json``); Shopify's ``draft_order``.

        Draft orders have no natural key, so the request is never sent twice: after an
        ambiguous failure (a lost answer, a timeout, a 5xx) an
        :class:`~antifragile.connectors.OutcomeUnknownError` is raised, not retryable.
        *reconcile_key*, when given, is stored on the draft order as the ``note_attributes``
        entry ``antifragile-key`` to find it by.
        """
        if not line_items:
            raise ConfigurationError("a draft order needs at least one line item")
        fields: dict[str, Any] = dict(extra or {})
        fields["line_items"] = [dict(line) for line in line_items]
        if customer_id is not None:
            fields["customer"] = {"id": customer_id}
        if note is not None:
            fields["note"] = note
        if reconcile_key is not None:
            attributes = list(fields.get("note_attributes") or [])
            attributes.append({"name": RECONCILE_ATTRIBUTE, "value": reconcile_key})
            fields["note_attributes"] = attributes
        try:
            answer = await self._call(
                "POST", "draft_orders.json", CREATE_DRAFT_ORDER, json={"draft_order": fields}
            )
        except IntegrationError as exc:
            unknown = outcome_unknown(exc, reconcile_key or "")
            if unknown is exc:
                raise
            raise unknown from exc
        draft = answer.get("draft_order")
        if not isinstance(draft, dict):
            raise UpstreamUnavailableError(
                "Shopify answered without a draft order (malformed body)",
                provider=PROVIDER,
                operation=CREATE_DRAFT_ORDER,
                replay_safe=False,
                detail=json.dumps(answer)[:500],
            )
        return draft

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

    def __repr__(self) -> str:
        return f"ShopifyConnector(base_url={self.base_url!r}, api_version={self.api_version!r})"


def _customer(data: dict[str, Any], *, found_existing: bool) -> ShopifyCustomer:
    email = data.get("email")
    return ShopifyCustomer(
        int(data["id"]),
        email if isinstance(email, str) else None,
        data,
        found_existing=found_existing,
    )
