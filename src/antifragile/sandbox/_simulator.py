"""What a provider simulator is: routes, an auth check, the provider's error format.

A :class:`Simulator` subclass names its provider (the path prefix it is served under), declares
its :class:`Route` s and renders errors the way the provider does. A route's handler receives a
:class:`Call` -- the request, the path parameters and :meth:`Call.commit`, which records a side
effect -- and returns a :class:`Reply`. The fault engine and the HTTP server are the sandbox's;
a simulator holds only the provider's behaviour.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from antifragile.errors import ConfigurationError
from antifragile.sandbox._server import IncomingRequest

if TYPE_CHECKING:
    from antifragile.sandbox._status import StatusWebhooks


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, a JSON value (or raw bytes) and headers."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        if self.json is not None:
            return json.dumps(self.json, separators=(",", ":")).encode()
        return self.body

    def with_headers(self, headers: Mapping[str, str]) -> Reply:
        merged = {**self.headers, **headers}
        return Reply(self.status, self.json, self.body, merged)


@dataclass(frozen=True, slots=True)
class Effect:
    """A side effect a simulator accepted (an email sent, a contact created...).

    ``endpoint`` is the route's name (``"POST /emails"``); ``id`` the provider's id for it;
    ``data`` what was asked (the request's JSON); ``at`` wall-clock epoch seconds.
    """

    provider: str
    endpoint: str
    id: str
    data: Any
    idempotency_key: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "id": self.id,
            "data": self.data,
            "idempotency_key": self.idempotency_key,
            "at": self.at,
        }


class EffectLog:
    """Every accepted side effect, in order; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._effects: list[Effect] = []

    def add(self, effect: Effect) -> None:
        with self._lock:
            self._effects.append(effect)

    def list(self, provider: str | None = None, endpoint: str | None = None) -> list[Effect]:
        with self._lock:
            return [
                e
                for e in self._effects
                if (provider is None or e.provider == provider)
                and (endpoint is None or e.endpoint == endpoint)
            ]

    def clear(self) -> None:
        with self._lock:
            self._effects.clear()


@dataclass(slots=True)
class Call:
    """One request routed to a handler."""

    provider: str
    endpoint: str
    request: IncomingRequest
    params: dict[str, str]
    log: EffectLog
    effects: list[Effect] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return self.request.headers

    def json(self) -> Any:
        """The body as JSON (raises ``ValueError`` when it is not)."""
        return self.request.json()

    def commit(self, id: str, data: Any, idempotency_key: str | None = None) -> Effect:
        """Record the side effect of this request (it happened, whatever the client hears)."""
        effect = Effect(self.provider, self.endpoint, id, data, idempotency_key, time.time())
        self.log.add(effect)
        self.effects.append(effect)
        return effect


Handler = Callable[[Call], Reply]

_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """``method`` and ``pattern`` (``/emails/{id}``: a ``{name}`` matches one path segment)."""

    method: str
    pattern: str
    handler: Handler

    @property
    def endpoint(self) -> str:
        """The name faults and effects use: ``"POST /emails"``."""
        return f"{self.method.upper()} {self.pattern}"

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when *path* matches the pattern (a trailing ``/`` is allowed)."""
        want = self.pattern.strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(want, got, strict=True):
            name = _PARAM.fullmatch(pattern)
            if name is not None and segment:
                params[name.group(1)] = segment
            elif pattern != segment:
                return None
        return params


class Simulator:
    """Base of provider simulators: subclasses set :attr:`name` and define :meth:`routes`.

    Subclasses override :meth:`throttle` (the provider's quota) and :meth:`authenticate`
    (``None`` lets the request in, a :class:`Reply` refuses it), :meth:`error` (the
    provider's error body for a status) and :meth:`rate_limited` (its 429), and may add
    headers to every answer with :meth:`decorate` (rate-limit headers, say).
    """

    name: str = ""
    #: whether the simulator sends status webhooks after a send (see ``_status``)
    sends_webhooks: bool = False

    def __init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigurationError("a simulator needs a name without '/'")
        self._routes: tuple[Route, ...] = tuple(self.routes())
        #: the sandbox's status-webhook sender, set when the simulator is served
        self.webhooks: StatusWebhooks | None = None

    def routes(self) -> Iterable[Route]:
        return ()

    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for *method* and *path* (relative to the provider's prefix), if any."""
        for route in self._routes:
            if route.method.upper() != method.upper():
                continue
            params = route.match(path)
            if params is not None:
                return route, params
        return None

    @property
    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self._routes] + list(self.operations)

    #: finer endpoint names faults may be set on (one GraphQL operation of an endpoint, say):
    #: see :meth:`operation`
    operations: tuple[str, ...] = ()

    def operation(self, route: Route, request: IncomingRequest) -> str | None:
        """The name among :attr:`operations` of what *request* asks *route* for, if any: its
        faults come before the route's own."""
        return None

    def allowed_methods(self, path: str) -> list[str]:
        return [r.method for r in self._routes if r.match(path) is not None]

    def throttle(self, request: IncomingRequest) -> Reply | None:
        """The provider's own rate limit: ``None`` admits the request, a reply refuses it."""
        return None

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        """``None`` lets the request in; a reply (401, 403) refuses it."""
        return None

    def error(self, status: int, message: str | None = None) -> Reply:
        """The provider's error answer for *status* (a generic JSON body here)."""
        return Reply(status, {"error": {"status": status, "message": message or str(status)}})

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(429, "Too many requests")
        return reply.with_headers({"retry-after": _seconds(retry_after)})

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        """Headers every answer of this provider carries; the reply unchanged by default."""
        return reply

    def coded_error(self, status: int, code: int) -> Reply:
        """The provider's error answer for *status* carrying its own error *code* (a fault
        with a ``code``); the plain :meth:`error` unless the provider has codes."""
        return self.error(status)

    #: the settings a fault document's ``simulators`` section may change (see :meth:`configure`)
    settable: frozenset[str] = frozenset()

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Change *settings* (names in :attr:`settable`, numbers > 0) while the sandbox runs;
        a bad one is a ConfigurationError and changes nothing."""
        self.check_settings(settings)
        for key, value in settings.items():
            setattr(self, key, type(getattr(self, key))(value))

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise ConfigurationError unless :meth:`configure` would take *settings*."""
        unknown = sorted(set(settings) - self.settable)
        if unknown:
            allowed = ", ".join(sorted(self.settable)) or "none"
            raise ConfigurationError(
                f"{self.name}: unknown simulator setting(s) {', '.join(unknown)} "
                f"(settable: {allowed})"
            )
        for key, value in settings.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"{self.name}.{key} must be a number > 0")

    def reset(self) -> None:
        """Forget the simulator's state (idempotency keys, quotas...)."""


def _seconds(value: float) -> str:
    text = format(value, ".3f").rstrip("0").rstrip(".")
    return text or "0"
