"""Shopify's GraphQL Admin API for :class:`~antifragile.sandbox.ShopifySimulator`.

``POST /admin/api/{version}/graphql.json`` with ``{"query": "...", "variables": {...}}``. The
document is not parsed as GraphQL: the first field of its selection names the operation, and
its arguments come from ``variables`` (``$name``) or literals. Known root fields:

* ``customerCreate(input: $input)`` -- ``{"customer": {...}, "userErrors": []}``; an email (or
  phone) already taken is a ``userErrors`` entry ``{"field": ["email"], "message": "Email has
  already been taken"}`` and no customer. Recorded as an effect, like the REST create.
* ``customers(first: N, query: "email:a@b.example")`` -- ``{"nodes": [...], "edges":
  [{"node": ...}]}``, the same search as REST.

An answer always has ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``,
``throttleStatus`` ``{maximumAvailable, currentlyAvailable, restoreRate}``). A mutation costs 10
points, a connection ``2 + first``. A query whose cost is above what the bucket holds is
answered 200 with ``errors: [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]``,
no ``data`` and ``actualQueryCost: null``; nothing is spent. Customers are kept as REST
objects (one store for both APIs) and shown with GraphQL names (``gid://shopify/Customer/N``,
``firstName``...).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from antifragile.sandbox._simulator import Call, Reply

MUTATION_COST = 10
_ROOT = re.compile(
    r"^\s*(query|mutation)?\s*(\w+)?\s*(\([^)]*\))?\s*(@\w+(\([^)]*\))?\s*)*\{\s*(\w+)"
)
_ARG = re.compile(r"(\w+)\s*:\s*(\$\w+|\"(?:[^\"\\]|\\.)*\"|-?\d+)")


class CostBucket:
    """Shopify's calculated-cost leaky bucket: *maximum* points refilled at *restore_rate*."""

    def __init__(self, maximum: float, restore_rate: float, clock: Callable[[], float]) -> None:
        self.maximum = float(maximum)
        self.restore_rate = float(restore_rate)
        self._clock = clock
        self._lock = threading.Lock()
        self._available = self.maximum
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._available = min(
            self.maximum, self._available + (now - self._stamp) * self.restore_rate
        )
        self._stamp = now
        return self._available

    def spend(self, cost: float) -> bool:
        """Take *cost* points if the bucket holds them."""
        with self._lock:
            if self._refill() < cost:
                return False
            self._available -= cost
            return True

    def set_available(self, points: float) -> None:
        """Leave *points* in the bucket (another app's queries spent the rest, say)."""
        with self._lock:
            self._refill()
            self._available = max(0.0, min(self.maximum, float(points)))

    def status(self) -> dict[str, float]:
        with self._lock:
            available = self._refill()
        return {
            "maximumAvailable": self.maximum,
            "currentlyAvailable": float(int(available)),
            "restoreRate": self.restore_rate,
        }

    def reset(self) -> None:
        with self._lock:
            self._available, self._stamp = self.maximum, self._clock()


def parse(document: str, variables: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """``(kind, root field, arguments)`` of *document*, or ``None`` when it is not one."""
    match = _ROOT.match(document)
    if match is None:
        return None
    kind = match.group(1) or "query"
    field = match.group(6)
    rest = document[match.end() :].lstrip()
    arguments: dict[str, Any] = {}
    if rest.startswith("("):
        closing = rest.find(")")
        if closing < 0:
            return None
        for name, raw in _ARG.findall(rest[1:closing]):
            if raw.startswith("$"):
                arguments[name] = variables.get(raw[1:])
            elif raw.startswith('"'):
                arguments[name] = bytes(raw[1:-1], "utf-8").decode("unicode_escape")
            else:
                arguments[name] = int(raw)
    return kind, field, arguments


def cost_of(kind: str, arguments: dict[str, Any]) -> int:
    """The requested cost: 10 for a mutation, ``2 + first`` for a connection, 1 otherwise."""
    if kind == "mutation":
        return MUTATION_COST
    first = arguments.get("first")
    return 2 + first if isinstance(first, int) and first > 0 else 1


def as_graphql_customer(customer: dict[str, Any]) -> dict[str, Any]:
    """A REST customer object with the GraphQL Admin API's names."""
    return {
        "id": customer["admin_graphql_api_id"],
        "legacyResourceId": str(customer["id"]),
        "email": customer.get("email"),
        "firstName": customer.get("first_name"),
        "lastName": customer.get("last_name"),
        "phone": customer.get("phone"),
        "state": str(customer.get("state", "disabled")).upper(),
        "tags": [t.strip() for t in str(customer.get("tags") or "").split(",") if t.strip()],
        "note": customer.get("note"),
        "verifiedEmail": customer.get("verified_email", False),
        "createdAt": customer.get("created_at"),
        "updatedAt": customer.get("updated_at"),
    }


def rest_fields(customer_input: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL ``CustomerInput`` as the REST customer fields the simulator keeps."""
    names = {
        "email": "email",
        "firstName": "first_name",
        "lastName": "last_name",
        "phone": "phone",
        "note": "note",
        "verifiedEmail": "verified_email",
        "addresses": "addresses",
    }
    fields = {rest: customer_input[gql] for gql, rest in names.items() if gql in customer_input}
    tags = customer_input.get("tags")
    if isinstance(tags, list):
        fields["tags"] = ", ".join(str(t) for t in tags)
    return fields


def user_errors(errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    """REST field errors as GraphQL ``userErrors`` (``Email has already been taken``)."""
    found: list[dict[str, Any]] = []
    for name, messages in errors.items():
        label = name.replace("_", " ").capitalize()
        for message in messages:
            text = message if name == "base" else f"{label} {message}"
            found.append({"field": None if name == "base" else [name], "message": text})
    return found


def answer(data: Any, cost: int, bucket: CostBucket, *, throttled: bool = False) -> Reply:
    """A GraphQL answer (HTTP 200) with ``extensions.cost``."""
    extensions = {
        "cost": {
            "requestedQueryCost": cost,
            "actualQueryCost": None if throttled else cost,
            "throttleStatus": bucket.status(),
        }
    }
    if throttled:
        error = {
            "message": "Throttled",
            "extensions": {
                "code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits",
            },
        }
        return Reply(200, {"errors": [error], "extensions": extensions})
    return Reply(200, {"data": data, "extensions": extensions})


def query_error(message: str) -> Reply:
    """A document the simulator does not know: 200 with ``errors`` and no ``data``."""
    return Reply(200, {"errors": [{"message": message}]})


def request_of(call: Call) -> tuple[str, dict[str, Any]] | None:
    """The ``query`` and ``variables`` of a GraphQL request body, or ``None``."""
    try:
        body = call.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return None
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        return None
    return body["query"], variables
