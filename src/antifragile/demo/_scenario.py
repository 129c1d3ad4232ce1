"""What the demo plays: the fault script, the customers and the pace.

A **fault script** is a list of fault windows, each a :class:`~antifragile.sandbox.FaultPlan`
for one provider (and optionally one endpoint) that applies from ``start`` to ``end`` seconds
after the run starts, plus the moments the worker is restarted. It is plain data, read from a
YAML or JSON file (``antifragile demo --faults FILE``)::

    name: my incident
    worker_restarts: [8]
    faults:
      - provider: shopify
        label: Shopify answers 503
        start: 2
        end: 12
        chaos: [{p: 1.0, kind: error, status: 503}]
      - provider: hubspot
        endpoint: POST /crm/v3/objects/contacts
        label: HubSpot times out after acting
        start: 3
        end: 13
        chaos: [{p: 0.35, kind: ambiguous, lost: hang}]

A window's other fields are those of a fault plan (``script``, ``chaos``, ``latency``,
``seed``; see :mod:`antifragile.sandbox._engine`). **Customers** are simulated phones that go
through the intake flow: a greeting, then their name, email, need and a time to call back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.sandbox import FaultPlan
from antifragile.sandbox._engine import ANY_ENDPOINT, read_fault_file

#: the providers the demo's service talks to, in display order (a fault script names them)
PROVIDERS: tuple[str, ...] = ("whatsapp", "resend", "mandrill", "shopify", "hubspot", "slack")
#: the email chain of the owner's summary email, in order: Resend, then Mailchimp Transactional
#: (Mandrill) when Resend is passed over; one summary email per customer across the chain
EMAIL_CHAIN: tuple[str, ...] = ("resend", "mandrill")
#: providers whose effects must be exactly once after recovery (idempotency key or reconcile;
#: the email chain's providers together)
IDEMPOTENT: tuple[str, ...] = ("resend", "mandrill", "shopify", "hubspot")
#: replies a customer gets for a whole intake conversation (greeting + 3 questions + thanks)
REPLIES_PER_CONVERSATION = 5

_PLAN_FIELDS = frozenset({"script", "chaos", "latency", "seed"})
_WINDOW_FIELDS = frozenset({"provider", "endpoint", "label", "start", "end"}) | _PLAN_FIELDS
_SCRIPT_FIELDS = frozenset({"name", "faults", "worker_restarts"})


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One provider misbehaving from ``start`` to ``end`` seconds after the run starts."""

    provider: str
    start: float
    end: float
    plan: Mapping[str, Any]
    endpoint: str = ANY_ENDPOINT
    label: str = ""

    def fault_plan(self, *, seed: int | None = None) -> FaultPlan:
        """A fresh :class:`FaultPlan` for this window (its clock starts now)."""
        data = dict(self.plan)
        if seed is not None and "seed" not in data:
            data["seed"] = seed
        return FaultPlan.from_dict({**data, "start": self.start, "end": self.end})

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provider": self.provider}
        if self.endpoint != ANY_ENDPOINT:
            out["endpoint"] = self.endpoint
        if self.label:
            out["label"] = self.label
        out.update({"start": self.start, "end": self.end, **self.plan})
        return out


@dataclass(frozen=True, slots=True)
class FaultScript:
    """Fault windows and worker restarts, in seconds after the run starts."""

    name: str
    faults: tuple[FaultWindow, ...]
    worker_restarts: tuple[float, ...] = ()

    @property
    def recovery(self) -> float:
        """When the last fault window ends (or the last restart happens)."""
        ends = [w.end for w in self.faults] + list(self.worker_restarts)
        return max(ends, default=0.0)

    def scaled(self, factor: float) -> FaultScript:
        """The same script played *factor* times as fast (``0.5``: twice as fast)."""
        return replace(
            self,
            faults=tuple(
                replace(w, start=round(w.start * factor, 3), end=round(w.end * factor, 3))
                for w in self.faults
            ),
            worker_restarts=tuple(round(t * factor, 3) for t in self.worker_restarts),
        )

    def active(self, provider: str, t: float) -> list[FaultWindow]:
        return [w for w in self.faults if w.provider == provider and w.covers(t)]

    def active_any(self, t: float) -> bool:
        return any(w.covers(t) for w in self.faults)

    def document(self, *, seed: int | None = None) -> dict[str, dict[str, list[FaultPlan]]]:
        """The windows as fresh fault plans by provider and endpoint (clocks start now)."""
        out: dict[str, dict[str, list[FaultPlan]]] = {}
        for index, window in enumerate(self.faults):
            plan = window.fault_plan(seed=None if seed is None else seed + index)
            out.setdefault(window.provider, {}).setdefault(window.endpoint, []).append(plan)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "worker_restarts": list(self.worker_restarts),
            "faults": [w.to_dict() for w in self.faults],
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "fault script") -> FaultScript:
        """Read the shape documented in the module docs (a ConfigurationError when wrong)."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{source}: a fault script is an object with 'faults'")
        unknown = sorted(set(map(str, data)) - _SCRIPT_FIELDS)
        if unknown:
            raise ConfigurationError(f"{source}: unknown field(s) {', '.join(unknown)}")
        entries = data.get("faults", [])
        if not isinstance(entries, list):
            raise ConfigurationError(f"{source}: 'faults' is a list of fault windows")
        windows = [_window(entry, index, source) for index, entry in enumerate(entries)]
        restarts = data.get("worker_restarts", [])
        if not isinstance(restarts, list) or not all(
            isinstance(t, int | float) and not isinstance(t, bool) and t >= 0 for t in restarts
        ):
            raise ConfigurationError(f"{source}: 'worker_restarts' is a list of seconds >= 0")
        return cls(
            name=str(data.get("name") or Path(source).stem),
            faults=tuple(windows),
            worker_restarts=tuple(sorted(float(t) for t in restarts)),
        )


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _window(entry: Any, index: int, source: str) -> FaultWindow:
    where = f"{source}: fault {index + 1}"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: a fault window is an object")
    unknown = sorted(set(map(str, entry)) - _WINDOW_FIELDS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {', '.join(unknown)}")
    provider = entry.get("provider")
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"{where}: unknown provider {provider!r}; 'provider' is one of {', '.join(PROVIDERS)}"
        )
    start, end = _seconds(entry.get("start")), _seconds(entry.get("end"))
    if start is None or end is None:
        raise ConfigurationError(f"{where}: 'start' and 'end' are seconds")
    if not 0 <= start < end:
        raise ConfigurationError(f"{where}: needs 0 <= start < end")
    window = FaultWindow(
        provider=str(provider),
        start=start,
        end=end,
        plan={k: v for k, v in entry.items() if k in _PLAN_FIELDS},
        endpoint=str(entry.get("endpoint") or ANY_ENDPOINT),
        label=str(entry.get("label") or ""),
    )
    try:
        window.fault_plan()  # checks the plan's fields and values now
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from None
    return window


def load_fault_script(path: str | Path) -> FaultScript:
    """Read a fault script from a ``.yaml``/``.yml`` or ``.json`` file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"no fault script at {file}")
    return FaultScript.from_dict(read_fault_file(file), source=str(file))


#: the default incident (seconds after the first customer writes)
DEFAULT_SCRIPT = FaultScript.from_dict(
    {
        "name": "default",
        "worker_restarts": [9.0],
        "faults": [
            {
                "provider": "shopify",
                "label": "Shopify down: 503",
                "start": 2.0,
                "end": 13.0,
                "chaos": [{"p": 1.0, "kind": "error", "status": 503}],
            },
            {
                "provider": "hubspot",
                "endpoint": "POST /crm/v3/objects/contacts",
                "label": "HubSpot times out after acting",
                "start": 3.0,
                "end": 14.0,
                "chaos": [{"p": 0.4, "kind": "ambiguous", "lost": "hang"}],
            },
            {
                "provider": "resend",
                "label": "Resend 429 burst (Retry-After 1 s)",
                "start": 4.0,
                "end": 6.5,
                "chaos": [
                    {"p": 0.7, "kind": "rate_limited", "retry_after": 1},
                    {"p": 0.15, "kind": "ambiguous", "lost": "reset"},
                ],
            },
            {
                "provider": "whatsapp",
                "endpoint": "webhooks",
                "label": "WhatsApp status webhooks delayed, lost, duplicated",
                "start": 1.0,
                "end": 16.0,
                "chaos": [
                    {"p": 0.15, "kind": "delayed", "seconds": 2},
                    {"p": 0.1, "kind": "lost"},
                    {"p": 0.15, "kind": "duplicated"},
                ],
            },
            {
                "provider": "whatsapp",
                "label": "WhatsApp 5xx burst (Graph error body, code 2)",
                "start": 6.0,
                "end": 10.0,
                "chaos": [
                    {"p": 0.8, "kind": "error", "status": 503},
                    {"p": 0.2, "kind": "error", "status": 500},
                ],
            },
            {
                "provider": "resend",
                "label": "Resend 429 burst (Retry-After 1 s)",
                "start": 10.5,
                "end": 12.5,
                "chaos": [
                    {"p": 0.7, "kind": "rate_limited", "retry_after": 1},
                    {"p": 0.15, "kind": "ambiguous", "lost": "reset"},
                ],
            },
        ],
    },
    source="default",
)


@dataclass(frozen=True, slots=True)
class Pace:
    """The timings of a run (seconds)."""

    customers: int  # default number of customers
    arrivals: float  # customers start writing within this window
    think: tuple[float, float]  # a customer's think time between messages (min, max)
    patience: float  # how long a customer waits for the next question before writing anyway
    attempt_timeout: float  # per attempt, antifragile and the naive loop alike
    call_timeout: float  # per call, retries included (antifragile)
    backoff: float  # first back-off of in-call retries and of job retries
    job_backoff_cap: float  # longest wait between two attempts of a job
    open_duration: float  # how long a breaker stays open before probing
    restart_gap: float  # how long the worker is down when it restarts
    max_seconds: float  # the least time the run waits for the customers and the drain
    script_scale: float  # the default script is played this many times as fast
    drain_cap: float = 40.0  # after the script ends, the run waits at most this for the drain
    echo_window: float = 3.0  # how long a reply whose outcome is unknown waits for its status
    echo_poll: float = 0.25  # how often such a reply looks at its record again


FULL_PACE = Pace(
    customers=24,
    arrivals=12.0,
    think=(0.3, 0.9),
    patience=2.0,
    attempt_timeout=1.0,
    call_timeout=5.0,
    backoff=0.25,
    job_backoff_cap=2.0,
    open_duration=1.5,
    restart_gap=1.0,
    max_seconds=55.0,
    script_scale=1.0,
)
QUICK_PACE = Pace(
    customers=8,
    arrivals=3.0,
    think=(0.1, 0.3),
    patience=1.0,
    attempt_timeout=0.5,
    call_timeout=3.0,
    backoff=0.15,
    job_backoff_cap=1.0,
    open_duration=0.8,
    restart_gap=0.4,
    max_seconds=45.0,
    script_scale=0.45,
    drain_cap=30.0,
    echo_window=2.0,
    echo_poll=0.2,
)

_FIRST = (
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Dennis",
    "Frances", "John", "Katherine", "Niklaus", "Hedy", "Tim", "Annie", "Claude", "Mary", "Linus",
    "Shafi", "Leslie", "Sophie", "Guido",
)  # fmt: skip
_LAST = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
    "Perlman", "Ritchie", "Allen", "McCarthy", "Johnson", "Wirth", "Lamarr", "Berners-Lee",
    "Easley", "Shannon", "Keller", "Torvalds", "Goldwasser", "Lamport", "Wilson", "Rossum",
)  # fmt: skip
_NEEDS = (
    "A birthday cake for 20 people",
    "Catering for an office lunch",
    "Two dozen croissants every Friday",
    "A wedding cake tasting",
    "Gluten-free bread for a cafe",
    "Cupcakes for a school fair",
)
_TIMES = ("weekday mornings", "after 5pm", "any time on Tuesday", "Saturday morning")


@dataclass(frozen=True, slots=True)
class Customer:
    """A simulated phone going through the intake flow."""

    index: int
    phone: str
    first: str
    last: str
    email: str
    need: str
    contact_time: str
    arrival: float
    thinks: tuple[float, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def messages(self) -> list[str]:
        """What the customer writes, in order: a greeting, then the flow's four answers."""
        return ["Hello there", self.name, self.email, self.need, self.contact_time]


def make_customers(
    count: int, *, seed: int, arrivals: float, think: Sequence[float]
) -> list[Customer]:
    """*count* customers with distinct names, emails and phones; the same for the same seed.

    Phone numbers take a random block per run, so that runs sharing a database do not
    continue each other's conversations.
    """
    if count < 1:
        raise ConfigurationError("the demo needs at least one customer")
    rng = random.Random(seed)
    block = random.SystemRandom().randrange(100, 1000)
    low, high = think
    customers = []
    for i in range(count):
        first = _FIRST[i % len(_FIRST)] + ("" if i < len(_FIRST) else str(i // len(_FIRST) + 1))
        last = _LAST[(i * 7 + seed) % len(_LAST)]
        customers.append(
            Customer(
                index=i,
                phone=f"4477{block:03d}{i:05d}",
                first=first,
                last=last,
                email=f"{first.lower()}.{last.lower()}@example.com",
                need=rng.choice(_NEEDS),
                contact_time=rng.choice(_TIMES),
                arrival=round(arrivals * i / max(1, count - 1), 3) if count > 1 else 0.0,
                thinks=tuple(round(rng.uniform(low, high), 3) for _ in range(5)),
            )
        )
    return customers
