"""Shopify's GraphQL Admin API for :class:`~antifragile.sandbox.ShopifySimulator`.

``POST /admin/api/{version}/graphql.json`` with ``{"query": "...", "variables": {...}}``. The
document is not parsed as GraphQL: the first field of its selection names the operation, and
its arguments come from ``variables`` (``$name``) or literals. Known root fields:

* ``customerCreate(input: $input)`` -- ``{"customer": {...}, "userErrors": []}``; an email (or
  phone) already taken is a ``userErrors`` entry ``{"field": ["email"], "message": "Email has
  already been taken"}`` and no customer. Recorded as an effect, like the REST create.
* ``customers(first: N, query: "email:a@b.example")`` -- ``{"nodes": [...], "edges":
  [{"node": ...}]}``, the same search as REST.
* ``orderCreate(order: $order, options: $options)`` -- ``OrderCreateOrderInput`` (``lineItems``
  with ``title``, ``quantity``, ``priceSet.shopMoney.amount`` or ``variantId``;
  ``customer.toAssociate.id``, ``email``, ``tags``, ``note``, ``customAttributes``,
  ``financialStatus``) -> ``{"order": {...}, "userErrors": []}``; refused input is
  ``userErrors`` ``[{"field": ["order", "lineItems"], "message", "code": "INVALID"}]``.
* ``draftOrderCreate(input: $input)`` -- ``DraftOrderInput`` (``lineItems`` with
  ``originalUnitPrice``, ``purchasingEntity.customerId``, ``note``, ``customAttributes``) ->
  ``{"draftOrder": {...}, "userErrors": []}``; ``draftOrderDelete(input: {id})`` ->
  ``{"deletedId"}``, or for a draft it does not know ``userErrors`` ``[{"field": ["id"],
  "message": "Draft order does not exist"}]`` (that message is the simulator's own).
* ``orders`` / ``draftOrders(first:, after:, reverse:, query: "created_at:>=..")`` --
  ``{"nodes", "edges", "pageInfo": {"hasNextPage", "endCursor"}}`` in creation order (newest
  first with ``reverse: true``).
* ``nodes(ids: [...])`` of ``gid://shopify/InventoryItem/N`` or ``gid://shopify/Location/N``,
  each with ``inventoryLevels { nodes { item { id } location { id } quantities { name
  quantity } } }`` (``available`` and ``on_hand``); an unknown id is ``null``. Its cost is
  ``1 + ids * (2 + first)`` of the ``inventoryLevels(first:)`` inside.

An answer always has ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``,
``throttleStatus`` ``{maximumAvailable, currentlyAvailable, restoreRate}``). A mutation costs 10
points, a connection ``2 + first``. A query whose cost is above what the bucket holds is
answered 200 with ``errors: [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]``,
no ``data`` and ``actualQueryCost: null``; nothing is spent. Customers are kept as REST
objects (one store for both APIs) and shown with GraphQL names (``gid://shopify/Customer/N``,
``firstName``...).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from antifragile.sandbox._simulator import Call, Reply

MUTATION_COST = 10
_ROOT = re.compile(
    r"^\s*(query|mutation)?\s*(\w+)?\s*(\([^)]*\))?\s*(@\w+(\([^)]*\))?\s*)*\{\s*(\w+)"
)
_ARG = re.compile(r"(\w+)\s*:\s*(\$\w+|\"(?:[^\"\\]|\\.)*\"|-?\d+|true|false|[A-Z][A-Z_]*)")


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
            elif raw in ("true", "false"):
                arguments[name] = raw == "true"
            elif raw[0].isalpha():
                arguments[name] = raw  # an enum value: ``sortKey: CREATED_AT``
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


#: a time filter of an ``orders`` / ``draftOrders`` search: ``created_at:>='2025-01-01T..'``
_SINCE = re.compile(r"\b(created_at|updated_at):>=?['\"]?([^'\" ]+)['\"]?")
#: the page size an ``inventoryLevels(first: ...)`` inside a ``nodes`` query asks for
_LEVELS_FIRST = re.compile(r"inventoryLevels\s*\(\s*first\s*:\s*(\$\w+|\d+)")


def gid_number(value: Any, kind: str) -> int | None:
    """The number of a global id ``gid://shopify/{kind}/{n}``, or ``None``."""
    if isinstance(value, str) and value.startswith(f"gid://shopify/{kind}/"):
        tail = value.rpartition("/")[2].partition("?")[0]
        return int(tail) if tail.isdigit() else None
    return None


def nodes_cost(document: str, variables: dict[str, Any], ids: Any) -> int:
    """The cost of ``nodes(ids:)`` with an ``inventoryLevels(first: N)`` connection on each:
    ``1 + len(ids) * (2 + N)`` (``N`` 10 when the document gives none)."""
    match = _LEVELS_FIRST.search(document)
    first: Any = 10
    if match is not None:
        raw = match.group(1)
        first = variables.get(raw[1:]) if raw.startswith("$") else int(raw)
    count = len(ids) if isinstance(ids, list) else 1
    return 1 + count * (2 + (first if isinstance(first, int) and first > 0 else 10))


def since_of(query: Any) -> tuple[str, str] | None:
    """``(field, ISO time)`` of a ``created_at:>=`` / ``updated_at:>=`` search term."""
    match = _SINCE.search(query) if isinstance(query, str) else None
    return None if match is None else (match.group(1), match.group(2))


def _money(value: Any) -> Any:
    """The amount of a ``MoneyInput`` / ``MoneyBagInput`` (``{"shopMoney": {"amount"}}``)."""
    if isinstance(value, dict):
        shop = value.get("shopMoney")
        return shop.get("amount") if isinstance(shop, dict) else value.get("amount")
    return value


def _attributes(value: Any) -> list[dict[str, Any]]:
    """``customAttributes`` (``[{key, value}]``) as REST ``note_attributes``."""
    if not isinstance(value, list):
        return []
    return [
        {"name": a.get("key"), "value": a.get("value")}
        for a in value
        if isinstance(a, dict) and isinstance(a.get("key"), str)
    ]


def _lines(value: Any, price: str) -> Any:
    """GraphQL line items as REST ones (*price*: ``priceSet`` or ``originalUnitPrice``)."""
    if not isinstance(value, list):
        return value
    lines: list[Any] = []
    for line in value:
        if not isinstance(line, dict):
            lines.append(line)
            continue
        rest: dict[str, Any] = {"quantity": line.get("quantity", 1)}
        if line.get("variantId") is not None:
            rest["variant_id"] = gid_number(line["variantId"], "ProductVariant") or -1
        if "title" in line:
            rest["title"] = line["title"]
        if price in line:
            amount = _money(line[price])
            rest["price"] = None if amount is None else str(amount)
        lines.append(rest)
    return lines


def _customer_ref(value: Any) -> dict[str, Any] | None:
    number = gid_number(value, "Customer")
    return {"id": number if number is not None else -1} if value is not None else None


def order_fields(order: dict[str, Any]) -> dict[str, Any]:
    """An ``OrderCreateOrderInput`` as the REST order fields the simulator keeps."""
    fields: dict[str, Any] = {"line_items": _lines(order.get("lineItems"), "priceSet")}
    customer = order.get("customer")
    associated = customer.get("toAssociate") if isinstance(customer, dict) else None
    ref = _customer_ref(
        associated.get("id") if isinstance(associated, dict) else order.get("customerId")
    )
    if ref is not None:
        fields["customer"] = ref
    for name in ("email", "note", "test"):
        if order.get(name) is not None:
            fields[name] = order[name]
    if isinstance(order.get("tags"), list):
        fields["tags"] = ", ".join(str(t) for t in order["tags"])
    if isinstance(order.get("financialStatus"), str):
        fields["financial_status"] = order["financialStatus"].lower()
    fields["note_attributes"] = _attributes(order.get("customAttributes"))
    return fields


def draft_fields(draft: dict[str, Any]) -> dict[str, Any]:
    """A ``DraftOrderInput`` as the REST draft order fields the simulator keeps."""
    fields: dict[str, Any] = {"line_items": _lines(draft.get("lineItems"), "originalUnitPrice")}
    entity = draft.get("purchasingEntity")
    ref = _customer_ref(
        entity.get("customerId") if isinstance(entity, dict) else draft.get("customerId")
    )
    if ref is not None:
        fields["customer"] = ref
    if draft.get("note") is not None:
        fields["note"] = draft["note"]
    fields["note_attributes"] = _attributes(draft.get("customAttributes"))
    return fields


def _shown_attributes(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": a.get("name"), "value": a.get("value")}
        for a in item.get("note_attributes") or []
        if isinstance(a, dict)
    ]


def _money_bag(amount: Any) -> dict[str, Any]:
    return {"shopMoney": {"amount": str(amount), "currencyCode": "USD"}}


def _customer_shown(customer: Any) -> dict[str, Any] | None:
    """An order's customer as GraphQL shows it in this selection: ``{"id": gid}``."""
    if isinstance(customer, dict) and "admin_graphql_api_id" in customer:
        return {"id": customer["admin_graphql_api_id"]}
    return None


def as_graphql_order(order: dict[str, Any]) -> dict[str, Any]:
    """A REST order object with the GraphQL Admin API's names."""
    customer = order.get("customer")
    return {
        "id": order["admin_graphql_api_id"],
        "legacyResourceId": str(order["id"]),
        "name": order.get("name"),
        "email": order.get("email"),
        "note": order.get("note"),
        "tags": [t.strip() for t in str(order.get("tags") or "").split(",") if t.strip()],
        "customAttributes": _shown_attributes(order),
        "displayFinancialStatus": str(order.get("financial_status") or "paid").upper(),
        "totalPriceSet": _money_bag(order.get("total_price")),
        "customer": _customer_shown(customer),
        "test": bool(order.get("test")),
        "createdAt": order.get("created_at"),
    }


def as_graphql_draft(draft: dict[str, Any]) -> dict[str, Any]:
    """A REST draft order object with the GraphQL Admin API's names."""
    customer = draft.get("customer")
    return {
        "id": draft["admin_graphql_api_id"],
        "legacyResourceId": str(draft["id"]),
        "name": draft.get("name"),
        "status": str(draft.get("status") or "open").upper(),
        "customAttributes": _shown_attributes(draft),
        "totalPriceSet": _money_bag(draft.get("total_price")),
        "customer": _customer_shown(customer),
        "invoiceUrl": f"https://shop.example/drafts/{draft['id']}/invoice",
        "createdAt": draft.get("created_at"),
        "updatedAt": draft.get("updated_at"),
    }


def inventory_level(item: int, location: int, available: int) -> dict[str, Any]:
    """An ``InventoryLevel`` node with its ``available`` and ``on_hand`` quantities."""
    return {
        "id": f"gid://shopify/InventoryLevel/{location}?inventory_item_id={item}",
        "item": {"id": f"gid://shopify/InventoryItem/{item}"},
        "location": {"id": f"gid://shopify/Location/{location}"},
        "quantities": [
            {"name": "available", "quantity": available},
            {"name": "on_hand", "quantity": available},
        ],
    }


#: REST field names as GraphQL input field names, for ``userErrors`` paths
_FIELD_NAMES = {"line_items": "lineItems", "customer": "customer", "email": "email"}


def mutation_errors(
    errors: dict[str, list[str]], root: str, *, coded: bool = False
) -> list[dict[str, Any]]:
    """REST field errors as ``userErrors`` of a mutation whose input argument is *root*
    (``["order", "lineItems"]``); *coded* adds ``code: "INVALID"`` (``OrderCreateUserError``)."""
    found: list[dict[str, Any]] = []
    for name, messages in errors.items():
        label = _FIELD_NAMES.get(name, name)
        for message in messages:
            entry: dict[str, Any] = {
                "field": [root] if name == "base" else [root, label],
                "message": message if name == "base" else f"{label} {message}",
            }
            if coded:
                entry["code"] = "INVALID"
            found.append(entry)
    return found


def page(
    nodes: list[dict[str, Any]], after: Any, first: Any, *, reverse: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of *nodes* (ascending id order, descending when *reverse*) after the cursor
    *after*: the nodes and ``pageInfo`` (``hasNextPage``, ``endCursor``; a cursor is the last
    node's number)."""
    limit = first if isinstance(first, int) and 0 < first <= 250 else 50
    cursor = int(after) if isinstance(after, str) and after.isdigit() else None
    ordered = list(reversed(nodes)) if reverse else nodes
    rest = [
        n
        for n in ordered
        if cursor is None
        or (
            (int(n["legacyResourceId"]) < cursor) == reverse
            and int(n["legacyResourceId"]) != cursor
        )
    ]
    chosen = rest[:limit]
    info = {
        "hasNextPage": len(rest) > limit,
        "endCursor": chosen[-1]["legacyResourceId"] if chosen else None,
    }
    return chosen, info


def root_field(body: bytes) -> str | None:
    """The root field a GraphQL request *body* asks for (``orderCreate``), if it is one."""
    try:
        request = json.loads(body or b"null")
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        return None
    variables = request.get("variables")
    parsed = parse(request["query"], variables if isinstance(variables, dict) else {})
    return None if parsed is None else parsed[1]
