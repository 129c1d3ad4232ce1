"""The GraphQL Admin API side of :class:`~antifragile.connectors.ShopifyConnector`: the
documents it sends, Shopify's calculated-cost bucket read from ``extensions.cost``, and its
answers read into the connector's errors (see the connector's module docs)."""

from __future__ import annotations

import json
from typing import Any

from antifragile.errors import AuthenticationError, IntegrationError, InvalidRequestError, redact
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
