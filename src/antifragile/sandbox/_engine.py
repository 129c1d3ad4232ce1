"""The fault engine of a :class:`~antifragile.sandbox.ProviderSandbox`: what goes wrong, where.

Faults are set per provider and per endpoint (``"POST /emails"``, or ``"*"`` for every endpoint
of the provider). Each endpoint has a :class:`FaultPlan`:

* ``script`` -- a timeline by request: the next request gets the first fault, the one after it
  the second, and so on; each is used once;
* ``chaos`` -- probabilities: once the script is used up, every request draws one of these
  faults with its probability (``seed`` makes the draws reproducible);
* ``latency`` -- seconds added to every answer of the endpoint;
* ``start``/``end`` -- the window, in seconds after the plan was set, in which it applies
  (from the start, for ever, by default). An endpoint may hold several plans: with different
  windows they play as a timeline (an outage from 2 s to 5 s, then a quota squeeze...).

A :class:`ProviderFault` is one of

===============================  ============================================================
``latency(s)``                   the normal answer, *s* seconds late
``error(503)``                   a 5xx (or any status) in the provider's own error format;
                                 nothing happens on the provider's side
``rate_limited(2)``              429 with ``retry-after: 2``, in the provider's format
``error(400, code=80007)``       an error carrying the provider's own code (WhatsApp: a Graph
                                 code such as ``80007``, ``131056``, ``131047``), also in a
                                 fault file: ``{"kind": "error", "status": 400, "code": 80007}``
``reset()``                      the connection is reset before the request is handled
``hang()``                       no answer ever; the request is not handled
``malformed()``                  200 whose JSON body does not parse; not handled
``ambiguous(lost="reset")``      the request **is** handled -- its side effect is committed --
                                 then the answer is lost: the connection is reset (or, with
                                 ``lost="hang"``, never answered)
===============================  ============================================================

Plans are plain data: :meth:`FaultPlan.from_dict` / :meth:`FaultPlan.to_dict` read and write
the JSON shape used by fault files and by ``PUT /_sandbox/faults``::

    {"resend": {"POST /emails": {
        "script": [{"kind": "error", "status": 503}, {"kind": "ambiguous", "lost": "hang"}],
        "chaos": [{"p": 0.3, "kind": "ambiguous"}, {"p": 0.1, "kind": "error", "status": 500}],
        "latency": 0.01, "seed": 7}}}

An endpoint's value may also be a list of plans (a timeline of windows).

The endpoint ``"webhooks"`` of a provider scripts its **status webhooks** instead (see
:mod:`antifragile.sandbox._status`): one fault is drawn per accepted send, and decides how the
status webhooks of that send go out:

===============================  ============================================================
``delayed(s)``                   every status webhook of the send goes out *s* seconds late
``lost()``                       none of them is sent (the statuses are still decided)
``duplicated()``                 each is sent twice
``out_of_order()``               they are sent last status first (``read`` before ``sent``)
``undeliverable(code)``          the message fails: a ``failed`` status (WhatsApp ``131026``,
                                 Twilio ``undelivered`` ``30003``, a SendGrid ``bounce``, a
                                 Resend ``email.bounced``) instead of delivered
===============================  ============================================================

Webhook faults belong to ``"webhooks"`` only, request faults to request endpoints only, and a
provider's ``"*"`` plans never apply to its webhooks.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from antifragile.errors import ConfigurationError

ProviderFaultKind = Literal[
    "latency",
    "error",
    "rate_limited",
    "reset",
    "hang",
    "malformed",
    "ambiguous",
    "delayed",
    "lost",
    "duplicated",
    "out_of_order",
    "undeliverable",
]
Lost = Literal["reset", "hang"]

_REQUEST_KINDS: frozenset[str] = frozenset(
    ("latency", "error", "rate_limited", "reset", "hang", "malformed", "ambiguous")
)
#: the fault kinds of status webhooks (endpoint ``"webhooks"``)
WEBHOOK_KINDS: frozenset[str] = frozenset(
    ("delayed", "lost", "duplicated", "out_of_order", "undeliverable")
)
_KINDS: frozenset[str] = _REQUEST_KINDS | WEBHOOK_KINDS

#: the endpoint name that matches every endpoint of a provider
ANY_ENDPOINT = "*"
#: the endpoint name of a provider's status webhooks in the fault engine
WEBHOOKS = "webhooks"


@dataclass(frozen=True, slots=True)
class ProviderFault:
    """One fault a provider simulator plays on one request (build it with the class methods)."""

    kind: ProviderFaultKind
    status: int = 503
    seconds: float = 0.0
    retry_after: float = 1.0
    lost: Lost = "reset"
    code: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigurationError(f"unknown fault kind {self.kind!r}; one of {sorted(_KINDS)}")
        if not 100 <= self.status <= 599:
            raise ConfigurationError(f"status must be within [100, 599], got {self.status!r}")
        if not self.seconds >= 0 or not self.retry_after >= 0:
            raise ConfigurationError("seconds and retry_after must be >= 0")
        if self.lost not in ("reset", "hang"):
            raise ConfigurationError(f"lost must be 'reset' or 'hang', got {self.lost!r}")

    @classmethod
    def latency(cls, seconds: float) -> ProviderFault:
        """Answer normally, *seconds* late."""
        return cls("latency", seconds=seconds)

    @classmethod
    def error(cls, status: int = 503, *, code: int | None = None) -> ProviderFault:
        """Answer *status* in the provider's error format (with the provider's own error
        *code* when given), without handling the request."""
        return cls("error", status=status, code=code)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0, *, code: int | None = None) -> ProviderFault:
        """Answer 429 with ``retry-after`` (seconds), in the provider's format (with its own
        throttling *code* when given: WhatsApp ``80007``...)."""
        return cls("rate_limited", status=429, retry_after=retry_after, code=code)

    @classmethod
    def reset(cls) -> ProviderFault:
        """Reset the connection before handling the request."""
        return cls("reset")

    @classmethod
    def hang(cls) -> ProviderFault:
        """Never answer, and never handle the request."""
        return cls("hang")

    @classmethod
    def malformed(cls) -> ProviderFault:
        """Answer 200 with a JSON body that does not parse, without handling the request."""
        return cls("malformed", status=200)

    @classmethod
    def ambiguous(cls, lost: Lost = "reset") -> ProviderFault:
        """Handle the request (commit its effect), then lose the answer: reset or hang."""
        return cls("ambiguous", lost=lost)

    @classmethod
    def delayed(cls, seconds: float) -> ProviderFault:
        """Status webhooks: send those of the send *seconds* late."""
        return cls("delayed", seconds=seconds)

    @classmethod
    def lost_webhooks(cls) -> ProviderFault:
        """Status webhooks: send none of those of the send."""
        return cls("lost")

    @classmethod
    def duplicated(cls) -> ProviderFault:
        """Status webhooks: send each of those of the send twice."""
        return cls("duplicated")

    @classmethod
    def out_of_order(cls) -> ProviderFault:
        """Status webhooks: send those of the send last status first."""
        return cls("out_of_order")

    @classmethod
    def undeliverable(cls, code: int | None = None) -> ProviderFault:
        """Status webhooks: the message fails (with the provider's error *code*, or its usual
        one for an undeliverable message)."""
        return cls("undeliverable", code=code)

    @property
    def webhook(self) -> bool:
        """Whether this fault scripts status webhooks (rather than a request)."""
        return self.kind in WEBHOOK_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of this fault (only the fields its kind uses)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("latency", "delayed"):
            out["seconds"] = self.seconds
        elif self.kind == "error":
            out["status"] = self.status
        elif self.kind == "rate_limited":
            out["retry_after"] = self.retry_after
        elif self.kind == "ambiguous":
            out["lost"] = self.lost
        if self.kind in ("error", "rate_limited", "undeliverable") and self.code is not None:
            out["code"] = self.code
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderFault:
        """Read the JSON shape: ``{"kind": "error", "status": 503}`` and so on."""
        known = {"kind", "status", "seconds", "retry_after", "lost", "code", "p"}
        unknown = set(data) - known
        if unknown:
            raise ConfigurationError(f"unknown fault field(s): {sorted(unknown)}")
        kind = data.get("kind")
        if kind not in _KINDS:
            raise ConfigurationError(f"unknown fault kind {kind!r}; one of {sorted(_KINDS)}")
        status = int(data.get("status", 429 if kind == "rate_limited" else 503))
        if kind == "malformed":
            status = 200
        return cls(
            cast(ProviderFaultKind, kind),
            status=status,
            seconds=float(data.get("seconds", 0.0)),
            retry_after=float(data.get("retry_after", 1.0)),
            lost=cast(Lost, data.get("lost", "reset")),
            code=None if data.get("code") is None else int(data["code"]),
        )


@dataclass
class FaultPlan:
    """The faults of one endpoint: a per-request script, then chaos draws; latency on top."""

    script: list[ProviderFault] = field(default_factory=list)
    chaos: list[tuple[float, ProviderFault]] = field(default_factory=list)
    latency: float = 0.0
    seed: int | None = None
    start: float = 0.0
    end: float | None = None
    _queue: collections.deque[ProviderFault] = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _origin: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        total = 0.0
        for p, _ in self.chaos:
            if not 0.0 <= p <= 1.0:
                raise ConfigurationError(f"a chaos probability is within [0, 1], got {p!r}")
            total += p
        if total > 1.0 + 1e-9:
            raise ConfigurationError("chaos probabilities must add up to at most 1")
        if not self.latency >= 0:
            raise ConfigurationError(f"latency must be >= 0 seconds, got {self.latency!r}")
        if not self.start >= 0 or (self.end is not None and not self.end > self.start):
            raise ConfigurationError(
                f"a plan's window needs 0 <= start < end, got {self.start!r}, {self.end!r}"
            )
        self._queue = collections.deque(self.script)
        self._rng = random.Random(self.seed)
        self._origin = time.monotonic()

    def active(self, now: float | None = None) -> bool:
        """Whether the plan's window (seconds since it was set) covers *now*."""
        elapsed = (time.monotonic() if now is None else now) - self._origin
        return self.start <= elapsed and (self.end is None or elapsed < self.end)

    def pick(self) -> ProviderFault | None:
        """The fault for the next request (``None``: answer normally). Not thread-safe."""
        if self._queue:
            return self._queue.popleft()
        if self.chaos:
            u = self._rng.random()
            for p, fault in self.chaos:
                if u < p:
                    return fault
                u -= p
        return None

    @property
    def pending(self) -> int:
        """Scripted faults not used yet."""
        return len(self._queue)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"script": [f.to_dict() for f in self._queue]}
        out["chaos"] = [{"p": p, **f.to_dict()} for p, f in self.chaos]
        out["latency"] = self.latency
        if self.seed is not None:
            out["seed"] = self.seed
        if self.start:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        if not isinstance(data, Mapping):
            raise ConfigurationError("a fault plan is an object")
        unknown = set(data) - {"script", "chaos", "latency", "seed", "start", "end"}
        if unknown:
            raise ConfigurationError(f"unknown fault plan field(s): {sorted(unknown)}")
        chaos: list[tuple[float, ProviderFault]] = []
        for entry in data.get("chaos", ()):
            if "p" not in entry:
                raise ConfigurationError("each chaos entry needs a probability 'p'")
            chaos.append((float(entry["p"]), ProviderFault.from_dict(entry)))
        seed, end = data.get("seed"), data.get("end")
        return cls(
            script=[ProviderFault.from_dict(f) for f in data.get("script", ())],
            chaos=chaos,
            latency=float(data.get("latency", 0.0)),
            seed=None if seed is None else int(seed),
            start=float(data.get("start", 0.0)),
            end=None if end is None else float(end),
        )


class FaultEngine:
    """Fault plans by provider and endpoint; thread-safe.

    An endpoint holds a list of plans -- one, usually; several make a timeline when their
    windows (``start``/``end``) differ. For each request the active plans are asked in order,
    the endpoint's own before the provider's ``"*"`` ones; the first fault drawn answers, and
    the largest latency of the active plans is added.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, str], list[FaultPlan]] = {}

    @staticmethod
    def _check(endpoint: str, plans: Sequence[FaultPlan]) -> None:
        """Webhook faults on ``"webhooks"`` only, request faults anywhere else."""
        for plan in plans:
            for fault in [*plan.script, *(f for _, f in plan.chaos)]:
                if fault.webhook != (endpoint == WEBHOOKS):
                    where = "status webhooks" if endpoint == WEBHOOKS else "requests"
                    raise ConfigurationError(
                        f"a {fault.kind!r} fault does not apply to {where} (endpoint "
                        f"{endpoint!r}); webhook faults are {sorted(WEBHOOK_KINDS)} on "
                        f"{WEBHOOKS!r}"
                    )

    def set(
        self, provider: str, endpoint: str, plans: FaultPlan | Sequence[FaultPlan] | None
    ) -> None:
        """Give *endpoint* of *provider* these plans (``None`` or ``[]`` removes them)."""
        listed = [plans] if isinstance(plans, FaultPlan) else list(plans or ())
        self._check(endpoint, listed)
        with self._lock:
            if listed:
                self._plans[(provider, endpoint)] = listed
            else:
                self._plans.pop((provider, endpoint), None)

    def add(self, provider: str, endpoint: str, plan: FaultPlan) -> None:
        """Add *plan* after the endpoint's other plans."""
        self._check(endpoint, [plan])
        with self._lock:
            self._plans.setdefault((provider, endpoint), []).append(plan)

    def clear(self, provider: str | None = None) -> None:
        """Remove every plan (of *provider* only, when given)."""
        with self._lock:
            for key in list(self._plans):
                if provider is None or key[0] == provider:
                    del self._plans[key]

    def pick(
        self, provider: str, endpoint: str, operation: str | None = None
    ) -> tuple[ProviderFault | None, float]:
        """The fault for a request to *endpoint* (or ``None``) and the latency to add; the plans
        of *operation* (a finer endpoint name: one GraphQL operation, say) come first."""
        now = time.monotonic()
        keys = [(provider, endpoint)]
        if operation is not None:
            keys.insert(0, (provider, operation))
        if endpoint != WEBHOOKS:
            keys.append((provider, ANY_ENDPOINT))
        with self._lock:
            latency = 0.0
            chosen: ProviderFault | None = None
            for key in keys:
                for plan in self._plans.get(key, ()):
                    if not plan.active(now):
                        continue
                    latency = max(latency, plan.latency)
                    if chosen is None:
                        chosen = plan.pick()
            return chosen, latency

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every plan, in the JSON shape of a fault file (a list where an endpoint has several)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (provider, endpoint), plans in self._plans.items():
                shapes = [plan.to_dict() for plan in plans]
                out.setdefault(provider, {})[endpoint] = shapes[0] if len(shapes) == 1 else shapes
        return out

    def load(
        self, data: Mapping[str, Any], *, endpoints: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """Set the plans of a fault document (``{provider: {endpoint: plan or [plans]}}``).

        Plans for endpoints the document does not name are kept; a ``null`` plan removes one.
        With *endpoints* (the endpoints of each provider), an unknown provider or endpoint is a
        :class:`ConfigurationError`. The document is checked whole before anything changes.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("a fault document is an object: {provider: {endpoint: plan}}")
        parsed: list[tuple[str, str, list[FaultPlan]]] = []
        for provider, plans_by_endpoint in data.items():
            known: set[str] | None = None
            if endpoints is not None:
                if provider not in endpoints:
                    raise ConfigurationError(f"no simulator for provider {provider!r}")
                known = {*endpoints[provider], ANY_ENDPOINT, WEBHOOKS}
            if not isinstance(plans_by_endpoint, Mapping):
                raise ConfigurationError(f"faults of {provider!r} are an object by endpoint")
            for endpoint, value in plans_by_endpoint.items():
                if known is not None and endpoint not in known:
                    raise ConfigurationError(
                        f"{provider} has no endpoint {endpoint!r}; one of {sorted(known)}"
                    )
                shapes = [] if value is None else value if isinstance(value, list) else [value]
                plans = [FaultPlan.from_dict(v) for v in shapes]
                self._check(endpoint, plans)
                parsed.append((provider, endpoint, plans))
        for provider, endpoint, plans in parsed:
            self.set(provider, endpoint, plans)


def read_fault_file(path: str | Path) -> dict[str, Any]:
    """Read a fault document from a ``.json``, ``.yaml`` or ``.yml`` file."""
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{file}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file}: a fault document is an object")
    return data
