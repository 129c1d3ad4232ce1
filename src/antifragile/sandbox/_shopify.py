"""A Shopify Admin API simulator: customers, orders, draft orders and inventory levels over
REST and over GraphQL (``POST .../graphql.json``, with its cost bucket and ``THROTTLED``
answers: see :mod:`antifragile.sandbox._shopify_graphql`), one store for both.

Faults can be set on one GraphQL operation -- the endpoint ``POST
/admin/api/{version}/graphql.json orderCreate`` (its root field after the path) -- before
those of the whole GraphQL endpoint; effects are recorded under the GraphQL endpoint, with the
REST object's fields (``{"order": {...}}``, ``{"draft_order": {...}}``; a delete
``{"draft_order": {"id": n}}``). Answers name their headers as Shopify does
(``Content-Type``, ``X-Shopify-Shop-Api-Call-Limit``, ``Retry-After``).

Every path is under ``/admin/api/{version}`` (a version like ``2024-01``, or ``unstable``;
anything else is 404).

* **Auth** -- ``X-Shopify-Access-Token``. A missing token, or one outside ``access_tokens``
  (when given), is 401 ``{"errors": "[API] Invalid API key or access token ..."}``.
* **Customers** -- ``POST /customers.json`` with ``{"customer": {...}}`` answers 201
  ``{"customer": {...}}`` and records the customer as an effect. The email is a natural key:
  a second customer with the same address (case-insensitive) is 422
  ``{"errors": {"email": ["has already been taken"]}}``, and the same goes for the phone. A
  malformed email or phone is 422 ``is invalid``; a customer without a name, email or phone is
  422 on ``base``. ``GET /customers/search.json?query=email:a@b.example`` finds customers
  (``field:value`` terms -- ``email``, ``phone``, ``first_name``, ``last_name`` -- or bare words
  matched against those fields).
* **Orders** -- ``POST /orders.json`` with ``{"order": {"line_items": [...]}}`` (lines as for
  draft orders; ``customer`` ``{"id"}``, ``email``, ``tags``, ``note``, ``note_attributes``,
  ``financial_status`` kept) answers 201 ``{"order": {...}}`` with ``name`` ``#1001``,
  ``#1002``...; recorded as an effect. ``GET /orders.json`` lists them (``status``
  ``open``/``any``..., ``ids``, ``since_id``, ``created_at_min``, ``limit`` 1..250 (50),
  ``fields``) -- in ascending ``id`` order, as ``since_id`` paging needs.
* **Draft orders** -- ``POST /draft_orders.json`` with ``{"draft_order": {"line_items": [...]}}``
  (each line a ``variant_id`` or a ``title`` with a ``price``, and a positive ``quantity``)
  answers 201 ``{"draft_order": {...}}`` (``note`` and ``note_attributes`` kept); recorded as an
  effect. ``GET /draft_orders.json`` lists them (``ids``, ``since_id``, ``status``,
  ``updated_at_min``, ``limit``, ``fields``); ``DELETE /draft_orders/{id}.json`` answers 200
  ``{}`` (recorded as an effect of that endpoint) or 404 when there is no such draft.
* **Inventory levels** -- ``GET /inventory_levels.json?inventory_item_ids=..&location_ids=..``
  lists the levels given to the simulator (``inventory``); at least one filter is required
  (422 otherwise).
* **Rate limit** -- a leaky bucket of ``bucket_size`` requests (40) that leaks ``leak_rate``
  per second (2). Every answer carries ``X-Shopify-Shop-Api-Call-Limit: <used>/<size>``; a
  request that does not fit is 429 with ``Retry-After`` in float seconds (``2.0``) and
  ``{"errors": "Exceeded 2 calls per second for api client. ..."}``.
* **Errors** -- ``{"errors": "<message>"}`` (401, 404, 429, 5xx...) or ``{"errors": {field:
  [messages]}}`` (422).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

from antifragile.sandbox import _shopify_graphql as gql
from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator

_PREFIX = "/admin/api/{version}"
_VERSION = re.compile(r"^(\d{4}-\d{2}|unstable)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}$")

_JSON = "application/json; charset=utf-8"

_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "[API] Invalid API key or access token (unrecognized login or wrong password)",
    402: "Payment Required",
    403: "[API] This action requires merchant approval for the required scope.",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    423: "This shop is unavailable",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _float_seconds(value: float) -> str:
    """``2.0``, ``0.25``: the float form Shopify uses in ``Retry-After``."""
    return str(float(round(max(0.0, value), 3)))


class ShopifySimulator(Simulator):
    """Shopify's Admin REST API: customers, draft orders, inventory levels, leaky bucket."""

    name = "shopify"

    def __init__(
        self,
        *,
        access_tokens: Iterable[str] | None = None,
        bucket_size: int = 40,
        leak_rate: float = 2.0,
        inventory: Iterable[tuple[int, int, int]] = (),
        clock: Callable[[], float] = time.monotonic,
        cost_bucket: float = 1000.0,
        restore_rate: float = 50.0,
    ) -> None:
        self.access_tokens = None if access_tokens is None else frozenset(access_tokens)
        self.bucket_size = bucket_size
        self.leak_rate = leak_rate
        self._inventory = [(int(i), int(loc), int(n)) for i, loc, n in inventory]
        self._clock = clock
        self.cost_bucket = gql.CostBucket(cost_bucket, restore_rate, clock)
        self._lock = threading.Lock()
        self._level = 0.0
        self._stamp: float | None = None
        self._ids = 0
        self._customers: dict[int, dict[str, Any]] = {}
        self._by_email: dict[str, int] = {}
        self._by_phone: dict[str, int] = {}
        self._draft_orders: dict[int, dict[str, Any]] = {}
        self._orders: dict[int, dict[str, Any]] = {}
        self._created: dict[int, float] = {}
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", f"{_PREFIX}/customers.json", self.create_customer),
            Route("GET", f"{_PREFIX}/customers/search.json", self.search_customers),
            Route("POST", f"{_PREFIX}/orders.json", self.create_order),
            Route("GET", f"{_PREFIX}/orders.json", self.list_orders),
            Route("POST", f"{_PREFIX}/draft_orders.json", self.create_draft_order),
            Route("GET", f"{_PREFIX}/draft_orders.json", self.list_draft_orders),
            Route("DELETE", f"{_PREFIX}/draft_orders/{{file}}", self.delete_draft_order),
            Route("GET", f"{_PREFIX}/inventory_levels.json", self.inventory_levels),
            Route("POST", f"{_PREFIX}/graphql.json", self.graphql),
        ]

    def reset(self) -> None:
        with self._lock:
            self._level, self._stamp, self._ids = 0.0, None, 0
            self._customers.clear()
            self._by_email.clear()
            self._by_phone.clear()
            self._draft_orders.clear()
            self._orders.clear()
            self._created.clear()
        self.cost_bucket.reset()

    # -- state ----------------------------------------------------------------------------------

    def fill(self, used: float) -> None:
        """Set the bucket to *used* requests (another app of the shop spent them, say)."""
        with self._lock:
            self._level, self._stamp = max(0.0, float(used)), self._clock()

    @property
    def customers(self) -> list[dict[str, Any]]:
        """Every customer created so far, oldest first."""
        with self._lock:
            return [dict(c) for c in self._customers.values()]

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Every order created so far, oldest first."""
        with self._lock:
            return [dict(o) for o in self._orders.values()]

    @property
    def draft_orders(self) -> list[dict[str, Any]]:
        """Every draft order not deleted, oldest first."""
        with self._lock:
            return [dict(d) for d in self._draft_orders.values()]

    def _leak(self, now: float) -> None:
        """Drain the bucket up to *now* (lock held)."""
        if self._stamp is not None:
            self._level = max(0.0, self._level - (now - self._stamp) * self.leak_rate)
        self._stamp = now

    def _next_id(self) -> int:
        self._ids += 1
        return 7_000_000_000 + self._ids

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None) -> Reply:
        default = _MESSAGES.get(status, "Internal Server Error" if status >= 500 else "Error")
        return Reply(status, {"errors": message or default})

    def invalid(self, errors: dict[str, list[str]]) -> Reply:
        """A 422 with Shopify's field errors: ``{"errors": {field: [messages]}}``."""
        return Reply(422, {"errors": errors})

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(
            429,
            f"Exceeded {self.leak_rate:g} calls per second for api client. "
            "Reduce request rates to resume uninterrupted service.",
        )
        return reply.with_headers({"Retry-After": _float_seconds(retry_after)})

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        # header names as Shopify writes them (clients that read them case-sensitively exist)
        named = reply.with_headers({"Content-Type": _JSON}) if reply.json is not None else reply
        if request.path.endswith("/graphql.json"):
            return named  # the GraphQL API's limit is its cost bucket, in the body
        with self._lock:
            self._leak(self._clock())
            used = min(self.bucket_size, math.ceil(self._level - 1e-9))
        return named.with_headers({"X-Shopify-Shop-Api-Call-Limit": f"{used}/{self.bucket_size}"})

    def throttle(self, request: IncomingRequest) -> Reply | None:
        if request.path.endswith("/graphql.json"):
            return None  # throttled by cost, in the handler
        with self._lock:
            self._leak(self._clock())
            if self._level + 1 <= self.bucket_size + 1e-9:
                self._level += 1
                return None
            wait = (self._level + 1 - self.bucket_size) / self.leak_rate
        return self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        token = request.headers.get("x-shopify-access-token", "").strip()
        if not token or (self.access_tokens is not None and token not in self.access_tokens):
            return self.error(401)
        return None

    # -- customers ------------------------------------------------------------------------------

    def _customer_errors(self, fields: dict[str, Any]) -> dict[str, list[str]]:
        """Field errors of a new customer (lock held)."""
        errors: dict[str, list[str]] = {}
        email, phone = fields.get("email"), fields.get("phone")
        if email is not None:
            if not isinstance(email, str) or not _EMAIL.match(email):
                errors["email"] = ["is invalid"]
            elif email.lower() in self._by_email:
                errors["email"] = ["has already been taken"]
        if phone is not None:
            if not isinstance(phone, str) or not _PHONE.match(phone):
                errors["phone"] = ["is invalid"]
            elif _digits(phone) in self._by_phone:
                errors["phone"] = ["has already been taken"]
        for name in ("first_name", "last_name", "note"):
            if name in fields and fields[name] is not None and not isinstance(fields[name], str):
                errors[name] = ["is invalid"]
        if not any(fields.get(k) for k in ("email", "phone", "first_name", "last_name")):
            errors["base"] = ["Customer must have a name, phone number or email address"]
        return errors

    def create_customer(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        try:
            body = call.json()
        except ValueError:
            return self.error(400)
        fields = body.get("customer") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return self.error(400, "Required parameter missing or invalid: customer")
        with self._lock:
            customer, errors = self._add_customer(fields)
            if customer is None:
                return self.invalid(errors)
            call.commit(str(customer["id"]), body)
            return Reply(201, {"customer": dict(customer)})

    def _add_customer(
        self, fields: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
        """Keep a new customer (lock held): it, or ``None`` and the field errors."""
        errors = self._customer_errors(fields)
        if errors:
            return None, errors
        customer_id = self._next_id()
        stamp = _now_text()
        email = fields.get("email")
        phone = fields.get("phone")
        customer: dict[str, Any] = {
            "id": customer_id,
            "email": email.lower() if isinstance(email, str) else None,
            "first_name": fields.get("first_name"),
            "last_name": fields.get("last_name"),
            "phone": phone,
            "state": "disabled",
            "orders_count": 0,
            "total_spent": "0.00",
            "verified_email": bool(fields.get("verified_email", False)),
            "tags": fields.get("tags", "") or "",
            "note": fields.get("note"),
            "currency": "USD",
            "addresses": list(fields.get("addresses") or []),
            "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._customers[customer_id] = customer
        if isinstance(email, str):
            self._by_email[email.lower()] = customer_id
        if isinstance(phone, str):
            self._by_phone[_digits(phone)] = customer_id
        return customer, {}

    # -- GraphQL Admin API ----------------------------------------------------------------------

    def fill_cost(self, available: float) -> None:
        """Leave *available* points in the GraphQL cost bucket."""
        self.cost_bucket.set_available(available)

    #: the GraphQL root fields the simulator answers, by operation kind
    _GRAPHQL_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "mutation": ("customerCreate", "orderCreate", "draftOrderCreate", "draftOrderDelete"),
        "query": ("customers", "orders", "draftOrders", "nodes"),
    }

    def graphql(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        document = gql.request_of(call)
        if document is None:
            return self.error(400, "Required parameter missing or invalid: query")
        parsed = gql.parse(*document)
        if parsed is None:
            return gql.query_error("syntax error: not a query this sandbox knows")
        kind, root, arguments = parsed
        if root not in self._GRAPHQL_FIELDS.get(kind, ()):
            parent = "Mutation" if kind == "mutation" else "QueryRoot"
            return gql.query_error(f"Field '{root}' doesn't exist on type '{parent}'")
        cost = (
            gql.nodes_cost(document[0], document[1], arguments.get("ids"))
            if root == "nodes"
            else gql.cost_of(kind, arguments)
        )
        if not self.cost_bucket.spend(cost):
            return gql.answer(None, cost, self.cost_bucket, throttled=True)
        handlers: dict[str, Callable[[Call, dict[str, Any]], dict[str, Any]]] = {
            "customerCreate": self._graphql_customer_create,
            "customers": self._graphql_customers,
            "orderCreate": self._graphql_order_create,
            "orders": self._graphql_orders,
            "draftOrderCreate": self._graphql_draft_create,
            "draftOrders": self._graphql_drafts,
            "draftOrderDelete": self._graphql_draft_delete,
            "nodes": self._graphql_nodes,
        }
        return gql.answer(handlers[root](call, arguments), cost, self.cost_bucket)

    operations = tuple(
        f"POST {_PREFIX}/graphql.json {field}"
        for fields in _GRAPHQL_FIELDS.values()
        for field in fields
    )

    def operation(self, route: Route, request: IncomingRequest) -> str | None:
        """``POST .../graphql.json orderCreate``: faults can be set on one GraphQL operation
        (its root field), before those of the whole GraphQL endpoint."""
        if not route.pattern.endswith("/graphql.json"):
            return None
        root = gql.root_field(request.body)
        name = f"{route.endpoint} {root}"
        return name if name in self.operations else None

    def _graphql_customer_create(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        customer_input = arguments.get("input")
        if not isinstance(customer_input, dict):
            refused = [{"field": ["input"], "message": "Input is invalid"}]
            return {"customerCreate": {"customer": None, "userErrors": refused}}
        fields = gql.rest_fields(customer_input)
        with self._lock:
            customer, errors = self._add_customer(fields)
            if customer is None:
                payload = {"customer": None, "userErrors": gql.user_errors(errors)}
                return {"customerCreate": payload}
            # recorded as the REST create records it: one shape of effect for both APIs
            call.commit(str(customer["id"]), {"customer": fields})
            shown = gql.as_graphql_customer(customer)
        return {"customerCreate": {"customer": shown, "userErrors": []}}

    def _graphql_customers(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        first = arguments.get("first")
        limit = first if isinstance(first, int) and 0 < first <= 250 else 50
        given = arguments.get("query")
        query = given if isinstance(given, str) else ""
        with self._lock:
            found = [
                gql.as_graphql_customer(c) for c in self._customers.values() if _matches(c, query)
            ][:limit]
        return {"customers": {"nodes": found, "edges": [{"node": c} for c in found]}}

    def _graphql_order_create(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        given = arguments.get("order")
        if not isinstance(given, dict):
            refused = [{"field": ["order"], "message": "Order is invalid", "code": "INVALID"}]
            return {"orderCreate": {"order": None, "userErrors": refused}}
        fields = gql.order_fields(given)
        options = arguments.get("options")
        if isinstance(options, dict) and isinstance(options.get("sendReceipt"), bool):
            fields["send_receipt"] = options["sendReceipt"]
        with self._lock:
            order, errors = self._add_order(fields)
            if order is None:
                refused = gql.mutation_errors(errors, "order", coded=True)
                return {"orderCreate": {"order": None, "userErrors": refused}}
            call.commit(str(order["id"]), {"order": fields})
            shown = gql.as_graphql_order(order)
        return {"orderCreate": {"order": shown, "userErrors": []}}

    def _graphql_draft_create(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        given = arguments.get("input")
        if not isinstance(given, dict):
            refused = [{"field": ["input"], "message": "Input is invalid"}]
            return {"draftOrderCreate": {"draftOrder": None, "userErrors": refused}}
        fields = gql.draft_fields(given)
        with self._lock:
            draft, errors = self._add_draft(fields)
            if draft is None:
                refused = gql.mutation_errors(errors, "input")
                return {"draftOrderCreate": {"draftOrder": None, "userErrors": refused}}
            call.commit(str(draft["id"]), {"draft_order": fields})
            shown = gql.as_graphql_draft(draft)
        return {"draftOrderCreate": {"draftOrder": shown, "userErrors": []}}

    def _graphql_draft_delete(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        given = arguments.get("input")
        gid = given.get("id") if isinstance(given, dict) else None
        number = gql.gid_number(gid, "DraftOrder")
        with self._lock:
            draft = None if number is None else self._draft_orders.pop(number, None)
            if draft is None:
                refused = [{"field": ["id"], "message": "Draft order does not exist"}]
                return {"draftOrderDelete": {"deletedId": None, "userErrors": refused}}
            call.commit(str(number), {"draft_order": {"id": number}})
        return {"draftOrderDelete": {"deletedId": gid, "userErrors": []}}

    def _graphql_listed(
        self,
        items: dict[int, dict[str, Any]],
        shown: Callable[[dict[str, Any]], dict[str, Any]],
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        """A connection of *items* (``first``, ``after``, ``reverse``; ``query``
        ``created_at:>=`` / ``updated_at:>=``), in id order -- creation order, which is what
        ``sortKey: CREATED_AT`` / ``UPDATED_AT`` give here, where nothing is updated."""
        since = gql.since_of(arguments.get("query"))
        floor: float | None = None
        if since is not None:
            try:
                floor = datetime.fromisoformat(since[1].replace("Z", "+00:00")).timestamp()
            except ValueError:
                floor = None
        with self._lock:
            chosen = [
                shown(item)
                for number, item in sorted(items.items())
                if floor is None or self._created.get(number, 0.0) >= floor
            ]
        nodes, info = gql.page(
            chosen,
            arguments.get("after"),
            arguments.get("first"),
            reverse=arguments.get("reverse") is True,
        )
        return {"nodes": nodes, "edges": [{"node": n} for n in nodes], "pageInfo": info}

    def _graphql_orders(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"orders": self._graphql_listed(self._orders, gql.as_graphql_order, arguments)}

    def _graphql_drafts(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        listed = self._graphql_listed(self._draft_orders, gql.as_graphql_draft, arguments)
        return {"draftOrders": listed}

    def _graphql_nodes(self, call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
        """``nodes(ids:)`` of inventory items and locations, each with its ``inventoryLevels``
        (unknown ids are ``null``)."""
        ids = arguments.get("ids")
        found: list[dict[str, Any] | None] = []
        for gid in ids if isinstance(ids, list) else [ids]:
            item = gql.gid_number(gid, "InventoryItem")
            location = gql.gid_number(gid, "Location")
            levels = [
                gql.inventory_level(i, loc, n)
                for i, loc, n in self._inventory
                if (item is not None and i == item) or (location is not None and loc == location)
            ]
            known = {i for i, _, _ in self._inventory} if item is not None else set()
            places = {loc for _, loc, _ in self._inventory} if location is not None else set()
            if item in known or location in places:
                found.append({"id": gid, "inventoryLevels": {"nodes": levels}})
            else:
                found.append(None)
        return {"nodes": found}

    def search_customers(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        args = parse_qs(call.request.query)
        query = (args.get("query") or [""])[0]
        limit = _int((args.get("limit") or ["50"])[0], 50)
        if not 1 <= limit <= 250:
            return self.error(400, "limit must be within 1 and 250")
        with self._lock:
            found = [dict(c) for c in self._customers.values() if _matches(c, query)]
        return Reply(200, {"customers": found[:limit]})

    # -- draft orders ---------------------------------------------------------------------------

    @staticmethod
    def _lines(lines: Any) -> tuple[float, dict[str, list[str]]]:
        """The total of *lines* (a list of line items), or the field errors refusing them."""
        if not isinstance(lines, list) or not lines:
            return 0.0, {"line_items": ["must have at least one line item"]}
        total = 0.0
        for line in lines:
            if not isinstance(line, dict):
                return 0.0, {"line_items": ["is invalid"]}
            quantity = line.get("quantity", 1)
            if not isinstance(quantity, int) or quantity < 1:
                return 0.0, {"line_items": ["quantity must be greater than 0"]}
            if line.get("variant_id") is None:
                if not isinstance(line.get("title"), str) or not line["title"]:
                    return 0.0, {"line_items": ["title can't be blank"]}
                price = _price(line.get("price"))
                if price is None:
                    return 0.0, {"line_items": ["price is invalid"]}
                total += price * quantity
        return total, {}

    def _customer_of(self, fields: dict[str, Any]) -> tuple[Any, dict[str, list[str]]]:
        """The order's customer, expanded from ``{"id"}`` (lock held), or the field errors."""
        customer = fields.get("customer")
        if isinstance(customer, dict) and customer.get("id") is not None:
            known = self._customers.get(_int(customer["id"], -1))
            if known is None:
                return None, {"customer": ["is invalid"]}
            return dict(known), {}
        return customer, {}

    def _resource(self, call: Call, key: str) -> tuple[dict[str, Any], Reply | None]:
        """The ``{key: {...}}`` object of a create request, or the answer refusing it (an
        unknown API version, a body that is not JSON, the object missing)."""
        if not _VERSION.match(call.params["version"]):
            return {}, self.error(404)
        try:
            body = call.json()
        except ValueError:
            return {}, self.error(400)
        fields = body.get(key) if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return {}, self.error(400, f"Required parameter missing or invalid: {key}")
        return fields, None

    def create_draft_order(self, call: Call) -> Reply:
        fields, refused = self._resource(call, "draft_order")
        if refused is not None:
            return refused
        with self._lock:
            draft, errors = self._add_draft(fields)
            if draft is None:
                return self.invalid(errors)
            call.commit(str(draft["id"]), {"draft_order": fields})
            return Reply(201, {"draft_order": dict(draft)})

    def _add_draft(
        self, fields: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
        """Keep a new draft order (lock held): it, or ``None`` and the field errors."""
        lines = fields.get("line_items")
        total, errors = self._lines(lines)
        customer, refused = self._customer_of(fields) if not errors else (None, {})
        if errors or refused:
            return None, errors or refused
        order_id = self._next_id()
        stamp = _now_text()
        draft: dict[str, Any] = {
            "id": order_id,
            "name": f"#D{len(self._draft_orders) + 1}",
            "status": "open",
            "line_items": lines,
            "customer": customer,
            "note": fields.get("note"),
            "note_attributes": list(fields.get("note_attributes") or []),
            "currency": "USD",
            "subtotal_price": f"{total:.2f}",
            "total_price": f"{total:.2f}",
            "admin_graphql_api_id": f"gid://shopify/DraftOrder/{order_id}",
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._draft_orders[order_id] = draft
        self._created[order_id] = time.time()
        return draft, {}

    def list_draft_orders(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        args = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        status = args.get("status")
        if status is not None and status not in ("open", "invoice_sent", "completed"):
            return self.error(400, "status is invalid")
        with self._lock:
            drafts = [dict(d) for d in self._draft_orders.values()]
            created = dict(self._created)
        if status is not None:
            drafts = [d for d in drafts if d.get("status") == status]
        return self._listed("draft_orders", drafts, created, args, "updated_at_min")

    def delete_draft_order(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        name, dot, suffix = call.params["file"].partition(".")
        if dot != "." or suffix != "json" or not name.isdigit():
            return self.error(404)
        with self._lock:
            draft = self._draft_orders.pop(int(name), None)
            if draft is None:
                return self.error(404)
            call.commit(name, {"draft_order": {"id": int(name)}})
        return Reply(200, {})

    # -- orders ---------------------------------------------------------------------------------

    def create_order(self, call: Call) -> Reply:
        fields, refused = self._resource(call, "order")
        if refused is not None:
            return refused
        with self._lock:
            order, errors = self._add_order(fields)
            if order is None:
                return self.invalid(errors)
            call.commit(str(order["id"]), {"order": fields})
            return Reply(201, {"order": dict(order)})

    def _add_order(
        self, fields: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
        """Keep a new order (lock held): it, or ``None`` and the field errors."""
        lines = fields.get("line_items")
        total, errors = self._lines(lines)
        email = fields.get("email")
        if (
            not errors
            and email is not None
            and not (isinstance(email, str) and _EMAIL.match(email))
        ):
            errors = {"email": ["is invalid"]}
        customer, refused = self._customer_of(fields) if not errors else (None, {})
        if errors or refused:
            return None, errors or refused
        order_id = self._next_id()
        number = 1000 + len(self._orders) + 1
        stamp = _now_text()
        if email is None and isinstance(customer, dict):
            email = customer.get("email")
        order: dict[str, Any] = {
            "id": order_id,
            "name": f"#{number}",
            "order_number": number,
            "email": email,
            "financial_status": fields.get("financial_status") or "paid",
            "fulfillment_status": None,
            "line_items": [{"id": self._next_id(), **line} for line in lines or ()],
            "customer": customer,
            "tags": fields.get("tags", "") or "",
            "note": fields.get("note"),
            "note_attributes": list(fields.get("note_attributes") or []),
            "currency": "USD",
            "subtotal_price": f"{total:.2f}",
            "total_price": f"{total:.2f}",
            "test": bool(fields.get("test", False)),
            "cancelled_at": None,
            "closed_at": None,
            "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._orders[order_id] = order
        self._created[order_id] = time.time()
        return order, {}

    def list_orders(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        args = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        status = args.get("status", "open")
        if status not in ("open", "closed", "cancelled", "any"):
            return self.error(400, "status is invalid")
        with self._lock:
            orders = [dict(o) for o in self._orders.values()]
            created = dict(self._created)
        if status != "any":  # orders are never closed or cancelled here: all are open
            orders = [o for o in orders if status == "open"]
        return self._listed("orders", orders, created, args, "created_at_min")

    def _listed(
        self,
        key: str,
        items: list[dict[str, Any]],
        created: dict[int, float],
        args: dict[str, str],
        since_arg: str,
    ) -> Reply:
        """A list answer: ``ids``, ``since_id``, *since_arg* (a time), ``limit``, ``fields``."""
        limit = _int(args.get("limit", "50"), -1)
        if not 1 <= limit <= 250:
            return self.error(400, "limit must be within 1 and 250")
        ids = _ids([args["ids"]]) if "ids" in args else None
        since_id = _int(args.get("since_id", "0"), -1)
        if since_id < 0:
            return self.error(400, "since_id is invalid")
        floor: float | None = None
        if since_arg in args:
            try:
                floor = datetime.fromisoformat(args[since_arg].replace("Z", "+00:00")).timestamp()
            except ValueError:
                return self.error(400, f"{since_arg} is invalid")
        chosen = [
            item
            for item in sorted(items, key=lambda i: int(i["id"]))
            if int(item["id"]) > since_id
            and (ids is None or int(item["id"]) in ids)
            and (floor is None or created.get(int(item["id"]), 0.0) >= floor)
        ][:limit]
        wanted = [f.strip() for f in args.get("fields", "").split(",") if f.strip()]
        if wanted:
            chosen = [{f: item[f] for f in wanted if f in item} for item in chosen]
        return Reply(200, {key: chosen})

    # -- inventory levels -----------------------------------------------------------------------

    def inventory_levels(self, call: Call) -> Reply:
        if not _VERSION.match(call.params["version"]):
            return self.error(404)
        args = parse_qs(call.request.query)
        items = _ids(args.get("inventory_item_ids"))
        locations = _ids(args.get("location_ids"))
        if items is None and locations is None:
            return self.invalid({"base": ["inventory_item_ids or location_ids must be specified"]})
        levels = [
            {
                "inventory_item_id": item,
                "location_id": location,
                "available": available,
                "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location}"
                f"?inventory_item_id={item}",
            }
            for item, location, available in self._inventory
            if (items is None or item in items) and (locations is None or location in locations)
        ]
        return Reply(200, {"inventory_levels": levels})


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _price(value: Any) -> float | None:
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return price if price >= 0 and math.isfinite(price) else None


def _ids(values: list[str] | None) -> set[int] | None:
    if not values:
        return None
    return {_int(v, -1) for part in values for v in part.split(",") if v.strip()}


def _matches(customer: dict[str, Any], query: str) -> bool:
    """Whether *customer* matches every term of a search *query* (``email:a@b.c``, words)."""
    for term in query.split():
        field, sep, value = term.partition(":")
        value = value.strip("\"'").lower()
        if sep and field in ("email", "phone", "first_name", "last_name"):
            have = customer.get(field)
            if field == "phone":
                if not isinstance(have, str) or _digits(have) != _digits(value):
                    return False
            elif not isinstance(have, str) or have.lower() != value:
                return False
            continue
        word = term.strip("\"'").lower()
        haystack = [customer.get(k) for k in ("email", "first_name", "last_name", "phone")]
        if not any(isinstance(h, str) and word in h.lower() for h in haystack):
            return False
    return True
