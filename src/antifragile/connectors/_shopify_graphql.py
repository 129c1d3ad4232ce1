"""The GraphQL Admin API side of :class:`~antifragile.connectors.ShopifyConnector`: the
documents it sends, Shopify's calculated-cost bucket read from ``extensions.cost``, and its
answers read into the connector's errors (see the connector's module docs)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from antifragile.errors import (
    AuthenticationError,
    IntegrationError,
    InvalidRequestError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.policies import RateLimitInfo, TokenBucket

#: the cost the connector reserves for a mutation before it knows the real one (Shopify
#: charges 10 points per mutation)
MUTATION_COST = 10.0

CUSTOMER_FIELDS = "id legacyResourceId email firstName lastName phone state tags note createdAt"

CUSTOMER_CREATE = (
    "mutation customerCreate($input: CustomerInput!) {"
    f" customerCreate(input: $input) {{ customer {{ {CUSTOMER_FIELDS} }}"
    " userErrors { field message } } }"
)

CUSTOMERS = (
    "query customers($first: Int!, $query: String) {"
    f" customers(first: $first, query: $query) {{ nodes {{ {CUSTOMER_FIELDS} }} }} }}"
)

_ATTRIBUTES = "customAttributes { key value }"
_TOTAL = "totalPriceSet { shopMoney { amount currencyCode } }"
ORDER_FIELDS = (
    f"id legacyResourceId name email note tags {_ATTRIBUTES} displayFinancialStatus {_TOTAL}"
    " createdAt"
)
DRAFT_FIELDS = f"id legacyResourceId name status {_ATTRIBUTES} {_TOTAL} invoiceUrl createdAt"

ORDER_CREATE = (
    "mutation orderCreate($order: OrderCreateOrderInput!, $options: OrderCreateOptionsInput) {"
    f" orderCreate(order: $order, options: $options) {{ order {{ {ORDER_FIELDS} }}"
    " userErrors { field message code } } }"
)

DRAFT_ORDER_CREATE = (
    "mutation draftOrderCreate($input: DraftOrderInput!) {"
    f" draftOrderCreate(input: $input) {{ draftOrder {{ {DRAFT_FIELDS} }}"
    " userErrors { field message } } }"
)

DRAFT_ORDER_DELETE = (
    "mutation draftOrderDelete($input: DraftOrderDeleteInput!) {"
    " draftOrderDelete(input: $input) { deletedId userErrors { field message } } }"
)

#: newest first, so that a lookup reads only what was created since the call began
ORDERS = (
    "query orders($first: Int!, $after: String) {"
    " orders(first: $first, after: $after, sortKey: CREATED_AT, reverse: true) {"
    f" nodes {{ {ORDER_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }} }}"
)

DRAFT_ORDERS = (
    "query draftOrders($first: Int!, $after: String) {"
    " draftOrders(first: $first, after: $after, sortKey: UPDATED_AT, reverse: true) {"
    f" nodes {{ {DRAFT_FIELDS} updatedAt }} pageInfo {{ hasNextPage endCursor }} }} }}"
)

_LEVELS = "inventoryLevels(first: $first) { nodes { ...level } }"
INVENTORY_LEVELS = (
    "query inventoryLevels($ids: [ID!]!, $first: Int!) { nodes(ids: $ids) { id"
    f" ... on InventoryItem {{ {_LEVELS} }} ... on Location {{ {_LEVELS} }} }} }}"
    " fragment level on InventoryLevel { item { id } location { id }"
    ' quantities(names: ["available"]) { name quantity } }'
)

#: a lookup's page size: small enough to keep its cost low, a window's orders in a page or two
LOOKUP_PAGE = 50

#: inventory levels read per item or location
LEVELS_PAGE = 50

#: the key of the custom attribute (REST: note attribute) an order's reconcile key is kept in
KEY_ATTRIBUTE = "antifragile-key"

#: codes of top-level errors that mean the token is refused
_AUTH_CODES = frozenset({"ACCESS_DENIED", "UNAUTHORIZED", "FORBIDDEN"})


def query_cost(first: int | None = None) -> float:
    """The cost reserved for a query: a connection of *first* nodes costs ``2 + first``."""
    return 1.0 if first is None else 2.0 + first


def throttle_status(answer: dict[str, Any]) -> tuple[float, float, float] | None:
    """``(maximumAvailable, currentlyAvailable, restoreRate)`` from ``extensions.cost``."""
    extensions = answer.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    status = cost.get("throttleStatus") if isinstance(cost, dict) else None
    if not isinstance(status, dict):
        return None
    values = [status.get(k) for k in ("maximumAvailable", "currentlyAvailable", "restoreRate")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    maximum, available, restore = (float(v) for v in values)  # type: ignore[arg-type]
    return (maximum, available, restore) if maximum > 0 and restore > 0 else None


def requested_cost(answer: dict[str, Any]) -> float | None:
    """``extensions.cost.requestedQueryCost``, when given."""
    extensions = answer.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    requested = cost.get("requestedQueryCost") if isinstance(cost, dict) else None
    if isinstance(requested, (int, float)) and not isinstance(requested, bool):
        return float(requested)
    return None


def error_codes(answer: dict[str, Any]) -> list[str]:
    """The ``extensions.code`` of each top-level error (``THROTTLED``...)."""
    errors = answer.get("errors")
    if not isinstance(errors, list):
        return []
    codes: list[str] = []
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        codes.append(code if isinstance(code, str) else "")
    return codes


def refill_wait(answer: dict[str, Any], reserved: float) -> float:
    """Seconds Shopify's bucket needs before a throttled query fits:
    ``(requested cost - currently available) / restore rate`` (1 s when the answer says too
    little to compute it)."""
    status = throttle_status(answer)
    if status is None:
        return 1.0
    _, available, restore = status
    requested = requested_cost(answer) or reserved
    return max(0.0, requested - available) / restore


def observe(limiter: TokenBucket | None, answer: dict[str, Any], operation: str) -> None:
    """Feed ``throttleStatus`` to *limiter*: its pace becomes the restore rate, its size the
    bucket's, and its tokens what is left in Shopify's bucket (other apps spend it too)."""
    status = throttle_status(answer)
    if limiter is None or status is None:
        return
    maximum, available, restore = status
    limiter.rate = restore
    limiter.burst = maximum
    limiter.observe(RateLimitInfo(limit=maximum, remaining=available), operation=operation)


def query_errors(answer: dict[str, Any], operation: str, provider: str) -> IntegrationError:
    """The error for top-level ``errors`` other than ``THROTTLED``: a refused token is an
    :class:`~antifragile.AuthenticationError`, anything else (a query Shopify does not accept)
    an :class:`~antifragile.InvalidRequestError`; neither is retried."""
    errors = answer.get("errors")
    listed = errors if isinstance(errors, list) else [errors]
    messages = [
        str(e.get("message")) if isinstance(e, dict) else str(e) for e in listed if e is not None
    ]
    text = redact("; ".join(messages) or "GraphQL errors")
    kind: type[IntegrationError] = (
        AuthenticationError if _AUTH_CODES & set(error_codes(answer)) else InvalidRequestError
    )
    return kind(
        f"Shopify refused the query: {text}",
        provider=provider,
        operation=operation,
        status=200,
        replay_safe=True,
        detail=json.dumps(answer)[:500],
    )


def user_error_text(user_errors: list[Any]) -> str:
    """``userErrors`` as one line: ``email: Email has already been taken``."""
    parts: list[str] = []
    for error in user_errors:
        if not isinstance(error, dict):
            continue
        field = error.get("field")
        path = ".".join(str(f) for f in field) if isinstance(field, list) else None
        message = str(error.get("message", ""))
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def email_taken(user_errors: list[Any]) -> bool:
    """Whether a ``userErrors`` entry says the email is taken."""
    for error in user_errors:
        if not isinstance(error, dict):
            continue
        field = error.get("field")
        message = str(error.get("message", "")).lower()
        on_email = isinstance(field, list) and bool(field) and field[-1] == "email"
        if on_email and "taken" in message:
            return True
    return False


def legacy_id(node: dict[str, Any]) -> int | None:
    """The numeric id of a GraphQL object (``legacyResourceId``, or the tail of its gid)."""
    legacy = node.get("legacyResourceId")
    if isinstance(legacy, (str, int)) and str(legacy).isdigit():
        return int(legacy)
    gid = node.get("id")
    if isinstance(gid, str) and gid.rpartition("/")[2].isdigit():
        return int(gid.rpartition("/")[2])
    return None


def customer_input(fields: dict[str, Any]) -> dict[str, Any]:
    """REST-style customer fields as a GraphQL ``CustomerInput``."""
    names = {
        "first_name": "firstName",
        "last_name": "lastName",
        "verified_email": "verifiedEmail",
    }
    found: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "tags" and isinstance(value, str):
            found["tags"] = [t.strip() for t in value.split(",") if t.strip()]
        else:
            found[names.get(name, name)] = value
    return found


def gid(kind: str, number: int | str) -> str:
    """``gid://shopify/{kind}/{number}`` (a global id is passed through as it is)."""
    text = str(number)
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{int(text)}"


def nodes_cost(count: int) -> float:
    """The cost reserved for :data:`INVENTORY_LEVELS` over *count* ids."""
    return 1.0 + count * (2.0 + LEVELS_PAGE)


def _line(line: Mapping[str, Any], price_field: str, currency: str) -> dict[str, Any]:
    """A REST-style line item (``title``, ``price``, ``quantity``, ``variant_id``) in GraphQL
    names; other keys are passed as they are (GraphQL names)."""
    found: dict[str, Any] = {}
    for name, value in line.items():
        if name == "variant_id":
            found["variantId"] = gid("ProductVariant", value)
        elif name == "price":
            found[price_field] = (
                {"shopMoney": {"amount": str(value), "currencyCode": currency}}
                if price_field == "priceSet"
                else str(value)
            )
        elif name != "currency":
            found[name] = value
    return found


def order_input(
    line_items: Sequence[Mapping[str, Any]],
    key: str,
    *,
    customer_id: int | str | None,
    email: str | None,
    tags: Sequence[str] | None,
    note: str | None,
    financial_status: str | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """An ``OrderCreateOrderInput`` carrying *key* as the ``antifragile-key`` custom
    attribute. A line's price is a ``MoneyBagInput`` in the line's ``currency``, else the
    order's (*extra* ``currency``), else ``USD``."""
    found: dict[str, Any] = dict(extra)
    currency = str(found.get("currency") or "USD")
    found["lineItems"] = [
        _line(line, "priceSet", str(line.get("currency") or currency)) for line in line_items
    ]
    if customer_id is not None:
        found["customer"] = {"toAssociate": {"id": gid("Customer", customer_id)}}
    optional = {"email": email, "tags": None if tags is None else list(tags), "note": note}
    found.update({k: v for k, v in optional.items() if v is not None})
    if financial_status is not None:
        found["financialStatus"] = financial_status.upper()
    found["customAttributes"] = tagged(found.get("customAttributes"), key)
    return found


def draft_input(
    line_items: Sequence[Mapping[str, Any]],
    key: str | None,
    *,
    customer_id: int | str | None,
    note: str | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A ``DraftOrderInput``; with *key*, carrying it as the ``antifragile-key`` custom
    attribute."""
    found: dict[str, Any] = dict(extra)
    found["lineItems"] = [_line(line, "originalUnitPrice", "") for line in line_items]
    if customer_id is not None:
        found["purchasingEntity"] = {"customerId": gid("Customer", customer_id)}
    if note is not None:
        found["note"] = note
    if key is not None:
        found["customAttributes"] = tagged(found.get("customAttributes"), key)
    return found


def tagged(attributes: Any, key: str) -> list[dict[str, Any]]:
    """*attributes* (``[{key, value}]``) with *key* as the one ``antifragile-key``."""
    kept = [
        dict(a)
        for a in attributes or []
        if isinstance(a, Mapping) and a.get("key") != KEY_ATTRIBUTE
    ]
    return [*kept, {"key": KEY_ATTRIBUTE, "value": key}]


def carries(node: dict[str, Any], key: str) -> bool:
    """Whether *node*'s ``customAttributes`` hold ``antifragile-key`` = *key*."""
    attributes = node.get("customAttributes")
    return isinstance(attributes, list) and any(
        isinstance(a, dict) and a.get("key") == KEY_ATTRIBUTE and a.get("value") == key
        for a in attributes
    )


def mutation_payload(
    data: dict[str, Any], mutation: str, field: str, operation: str, provider: str
) -> dict[str, Any]:
    """The *field* object of *mutation*'s payload in *data* (``orderCreate`` -> ``order``).

    ``userErrors`` are an :class:`~antifragile.InvalidRequestError` (Shopify refused the input:
    nothing was created, not retried); a payload without the object is a transient
    :class:`~antifragile.UpstreamUnavailableError` that may follow a create (``replay_safe``
    false: reconciled, not sent again blindly)."""
    payload = data.get(mutation)
    payload = payload if isinstance(payload, dict) else {}
    user_errors = payload.get("userErrors")
    if isinstance(user_errors, list) and user_errors:
        raise refused(user_errors, operation, provider)
    created = payload.get(field)
    if not isinstance(created, dict) or legacy_id(created) is None:
        raise UpstreamUnavailableError(
            f"Shopify answered without a {field} (malformed body)",
            provider=provider,
            operation=operation,
            status=200,
            replay_safe=False,
            detail=json.dumps(data)[:500],
        )
    return created


def refused(user_errors: list[Any], operation: str, provider: str) -> InvalidRequestError:
    """``userErrors`` as the :class:`~antifragile.InvalidRequestError` they are (with their
    ``code`` when the payload gives one)."""
    codes = sorted({str(e["code"]) for e in user_errors if isinstance(e, dict) and e.get("code")})
    suffix = f" ({', '.join(codes)})" if codes else ""
    return InvalidRequestError(
        redact(f"Shopify refused the input: {user_error_text(user_errors)}{suffix}"),
        provider=provider,
        operation=operation,
        status=200,
        replay_safe=True,
        detail=json.dumps(user_errors)[:500],
    )


def on_id(user_errors: list[Any]) -> bool:
    """Whether every ``userErrors`` entry is about the ``id`` argument (an unknown object)."""
    return bool(user_errors) and all(
        isinstance(e, dict) and isinstance(e.get("field"), list) and e["field"][-1:] == ["id"]
        for e in user_errors
    )


def connection(
    data: dict[str, Any], field: str, operation: str, provider: str
) -> tuple[list[dict[str, Any]], str | None]:
    """The nodes of connection *field* and the cursor of the next page (``None``: last)."""
    found = data.get(field)
    nodes = found.get("nodes") if isinstance(found, dict) else None
    if not isinstance(nodes, list):
        raise UpstreamUnavailableError(
            f"Shopify answered without {field} (malformed body)",
            provider=provider,
            operation=operation,
            status=200,
            replay_safe=True,
            detail=json.dumps(data)[:500],
        )
    info = found.get("pageInfo") if isinstance(found, dict) else None
    more = isinstance(info, dict) and info.get("hasNextPage") is True
    cursor = info.get("endCursor") if isinstance(info, dict) and more else None
    return [n for n in nodes if isinstance(n, dict)], cursor if isinstance(cursor, str) else None


def stamp(node: dict[str, Any], field: str) -> float | None:
    """*node*'s ISO 8601 time *field* (``createdAt``) as epoch seconds, if it parses."""
    value = node.get(field)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def levels(node: Any) -> list[tuple[int, int, int | None]]:
    """``(inventory item, location, available)`` of each level of an inventory item or
    location node (numbers from their global ids)."""
    found: list[tuple[int, int, int | None]] = []
    connection = node.get("inventoryLevels") if isinstance(node, dict) else None
    nodes = connection.get("nodes") if isinstance(connection, dict) else None
    for level in nodes if isinstance(nodes, list) else []:
        if not isinstance(level, dict):
            continue
        item = level.get("item")
        location = level.get("location")
        item_id = legacy_id(item) if isinstance(item, dict) else None
        location_id = legacy_id(location) if isinstance(location, dict) else None
        if item_id is None or location_id is None:
            continue
        available: int | None = None
        for quantity in level.get("quantities") or []:
            if isinstance(quantity, dict) and quantity.get("name") == "available":
                value = quantity.get("quantity")
                available = value if isinstance(value, int) else None
        found.append((item_id, location_id, available))
    return found
