"""ProviderSandbox: provider simulators behind one real local HTTP server, with faults on cue.

Each simulator is served under its name: Resend's ``POST /emails`` is
``POST {sandbox.url}/resend/emails``, so a connector pointed at
``base_url=f"{sandbox.url}/resend"`` talks to it as it would to the provider. A request goes
through, in order:

1. routing (an unknown path gets the provider's 404, a known path with another method its 405);
2. the fault engine (see :mod:`antifragile.sandbox._engine`): a fault that stops the request
   before the provider handles it (5xx, 429, reset, hang, malformed) leaves no side effect;
3. the provider's own quota and authentication, then request validation and the handler;
   accepted side effects are recorded (:meth:`ProviderSandbox.effects`);
4. for an *ambiguous* fault, the answer is then lost (reset or hang) -- the effect stands.

Faults are set from Python (:meth:`ProviderSandbox.faults`), from a JSON (or YAML) file
(:meth:`ProviderSandbox.load_faults`) or over HTTP while the sandbox runs:

=================================  ===========================================================
``GET /_sandbox/faults``           the fault plans in force (JSON document)
``PUT /_sandbox/faults``           set plans from a fault document (others are kept)
``DELETE /_sandbox/faults``        remove every plan (``?provider=`` for one provider)
``GET /_sandbox/effects``          ``{"count", "effects": [...]}``, ``?provider=&endpoint=``
``POST /_sandbox/reset``           forget effects, faults and every simulator's state
``GET /_sandbox/webhooks``         status-webhook callback URLs per provider, the time scale
                                   and SendGrid's Event Webhook verification key
``PUT /_sandbox/webhooks``         set callback URLs: ``{"whatsapp": "http://...", ...}``
                                   (``null`` stops a provider's webhooks)
``GET /_sandbox/deliveries``       what the sandbox decided for each accepted send:
                                   ``{"count", "by_final", "by_fate", "deliveries": [...]}``,
                                   ``?provider=``
``GET /_sandbox/webhooks/attempts``  every POST of a status webhook and its answer
=================================  ===========================================================

After accepting a send, simulators report its fate with the provider's status webhooks to the
callback URL configured for the provider (see :mod:`antifragile.sandbox._status`); the fault
engine scripts them under the endpoint ``"webhooks"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

from antifragile.errors import ConfigurationError
from antifragile.sandbox._engine import (
    ANY_ENDPOINT,
    WEBHOOKS,
    FaultEngine,
    FaultPlan,
    ProviderFault,
    read_fault_file,
)
from antifragile.sandbox._faults import Fault
from antifragile.sandbox._server import FlakyServer, IncomingRequest, RecordedRequest
from antifragile.sandbox._settings import configure_simulators
from antifragile.sandbox._simulator import Call, Effect, EffectLog, Reply, Simulator
from antifragile.sandbox._status import DeliveryStatus, StatusWebhooks

_log = logging.getLogger("antifragile.sandbox")

ADMIN_PREFIX = "/_sandbox"


def _answer(reply: Reply) -> Fault:
    named = "content-type" in {k.lower() for k in reply.headers}
    headers = {**({} if named else {"content-type": "application/json"}), **reply.headers}
    if reply.json is None and not named:
        headers.pop("content-type")
    fault = Fault.ok(reply.status, body=reply.content(), headers=headers)
    return fault if reply.status < 400 else replace(fault, kind="status")


def _admin(status: int, value: Any) -> Fault:
    return _answer(Reply(status, value))


def _delayed(fault: Fault, seconds: float) -> Fault:
    return Fault.slow(seconds, fault) if seconds > 0 else fault


class ProviderSandbox:
    """Provider simulators served by one :class:`~antifragile.sandbox.FlakyServer`.

    ::

        with ProviderSandbox([ResendSimulator()]) as sandbox:
            sandbox.faults("resend", "POST /emails", script=[ProviderFault.ambiguous()])
            ...  # a connector with base_url=sandbox.base_url("resend")
            assert len(sandbox.effects("resend")) == 1

    *simulators* defaults to every simulator antifragile ships; *faults* (a fault document) or
    *fault_file* set the initial faults. *webhook_urls* are the status-webhook callback URLs by
    provider; *time_scale* multiplies the providers' webhook retry delays (``0.001`` turns
    Resend's 5-minute retry into 0.3 s); *webhook_interval* seconds separate the statuses of
    one send.
    """

    def __init__(
        self,
        simulators: Iterable[Simulator] | None = None,
        *,
        faults: Mapping[str, Any] | None = None,
        fault_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_urls: Mapping[str, str] | None = None,
        time_scale: float = 1.0,
        webhook_interval: float = 0.02,
    ) -> None:
        if simulators is None:
            from antifragile.sandbox._resend import ResendSimulator

            simulators = [ResendSimulator()]
        self._simulators: dict[str, Simulator] = {}
        for simulator in simulators:
            if simulator.name in self._simulators:
                raise ConfigurationError(f"two simulators are named {simulator.name!r}")
            self._simulators[simulator.name] = simulator
        self.engine = FaultEngine()
        self.log = EffectLog()
        unknown = set(webhook_urls or {}) - {
            n for n, s in self._simulators.items() if s.sends_webhooks
        }
        if unknown:
            raise ConfigurationError(f"no status webhooks for provider(s) {sorted(unknown)}")
        self.webhooks = StatusWebhooks(
            self.engine, urls=webhook_urls, time_scale=time_scale, interval=webhook_interval
        )
        for simulator in self._simulators.values():
            simulator.webhooks = self.webhooks
        self.server = FlakyServer(handler=self._handle, host=host, port=port)
        if fault_file is not None:
            self.load_faults(fault_file)
        if faults is not None:
            self.load_faults(faults)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        self.server.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self.webhooks.stop()
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running sandbox."""
        return self.server.url

    def base_url(self, provider: str) -> str:
        """Where a client of *provider* points: ``{url}/{provider}``."""
        self.simulator(provider)
        return f"{self.url}/{provider}"

    # -- simulators, faults and effects ---------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        return list(self._simulators)

    def simulator(self, provider: str) -> Simulator:
        try:
            return self._simulators[provider]
        except KeyError:
            raise ConfigurationError(f"no simulator for provider {provider!r}") from None

    def faults(
        self,
        provider: str,
        endpoint: str = ANY_ENDPOINT,
        *,
        script: Sequence[ProviderFault] = (),
        chaos: Iterable[tuple[float, ProviderFault]] = (),
        latency: float = 0.0,
        seed: int | None = None,
        start: float = 0.0,
        end: float | None = None,
        add: bool = False,
    ) -> FaultPlan:
        """Set the fault plan of *endpoint* (``"POST /emails"``; ``"*"``: all) of *provider*.

        *script* faults hit the next requests in order, one each; then each request draws from
        *chaos* (``(probability, fault)`` pairs); *latency* seconds are added to every answer.
        The plan applies from *start* to *end* seconds from now (always, by default). It
        replaces the endpoint's plans, or with *add* comes after them (a timeline).
        """
        simulator = self.simulator(provider)
        known = [*simulator.endpoints, *([WEBHOOKS] if simulator.sends_webhooks else [])]
        if endpoint != ANY_ENDPOINT and endpoint not in known:
            raise ConfigurationError(f"{provider} has no endpoint {endpoint!r}; one of {known}")
        plan = FaultPlan(
            script=list(script),
            chaos=list(chaos),
            latency=latency,
            seed=seed,
            start=start,
            end=end,
        )
        if add:
            self.engine.add(provider, endpoint, plan)
        else:
            self.engine.set(provider, endpoint, plan)
        return plan

    def clear_faults(self, provider: str | None = None) -> None:
        self.engine.clear(provider)

    def load_faults(self, source: Mapping[str, Any] | str | Path) -> None:
        """Set fault plans from a fault document or a ``.json`` (``.yaml``) file."""
        data = source if isinstance(source, Mapping) else read_fault_file(source)
        data = configure_simulators(data, self._simulators)  # its "simulators" section
        self.engine.load(data, endpoints={n: s.endpoints for n, s in self._simulators.items()})

    def deliveries(self, provider: str | None = None) -> list[DeliveryStatus]:
        """What the sandbox decided for each accepted send (statuses, final status, fate of
        its webhooks), oldest first (of *provider* when given)."""
        return self.webhooks.deliveries(provider)

    def effects(self, provider: str | None = None, endpoint: str | None = None) -> list[Effect]:
        """Side effects accepted so far, oldest first (of *provider* / *endpoint* when given)."""
        return self.log.list(provider, endpoint)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the server received (admin ones included), oldest first."""
        return self.server.requests

    def reset(self) -> None:
        """Forget effects, faults, recorded requests and every simulator's state."""
        self.log.clear()
        self.engine.clear()
        self.server.reset()
        self.webhooks.reset()
        for simulator in self._simulators.values():
            simulator.reset()

    # -- serving --------------------------------------------------------------------------------

    def _handle(self, request: IncomingRequest) -> Fault:
        try:
            if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
                return self._admin(request)
            return self._provider(request)
        except Exception:  # a bug in a simulator must not kill the connection silently
            _log.exception("sandbox handler failed for %s %s", request.method, request.path)
            return _admin(500, {"error": "the sandbox failed to handle this request"})

    def _provider(self, request: IncomingRequest) -> Fault:
        provider, _, rest = request.path.lstrip("/").partition("/")
        simulator = self._simulators.get(provider)
        if simulator is None:
            return _admin(404, {"error": f"no provider simulator at /{provider}"})
        path = "/" + rest
        found = simulator.route(request.method, path)
        if found is None:
            status = 405 if simulator.allowed_methods(path) else 404
            return _answer(simulator.decorate(request, simulator.error(status)))
        route, params = found
        fault, latency = self.engine.pick(
            provider, route.endpoint, simulator.operation(route, request)
        )
        if fault is not None:
            if fault.kind == "latency":
                latency += fault.seconds
            elif fault.kind == "reset":
                return _delayed(Fault.reset(), latency)
            elif fault.kind == "hang":
                return _delayed(Fault.hang(), latency)
            elif fault.kind == "malformed":
                return _delayed(Fault.malformed(), latency)
            elif fault.kind in ("error", "rate_limited") and fault.code is not None:
                reply = simulator.coded_error(fault.status, fault.code)
                return _delayed(_answer(simulator.decorate(request, reply)), latency)
            elif fault.kind == "error":
                reply = simulator.error(fault.status)
                return _delayed(_answer(simulator.decorate(request, reply)), latency)
            elif fault.kind == "rate_limited":
                reply = simulator.rate_limited(fault.retry_after)
                return _delayed(_answer(simulator.decorate(request, reply)), latency)
        refused = simulator.throttle(request) or simulator.authenticate(request)
        if refused is not None:
            return _delayed(_answer(simulator.decorate(request, refused)), latency)
        call = Call(provider, route.endpoint, request, params, self.log)
        reply = route.handler(call)
        if fault is not None and fault.kind == "ambiguous":
            lost = Fault.reset() if fault.lost == "reset" else Fault.hang()
            return _delayed(lost, latency)
        return _delayed(_answer(simulator.decorate(request, reply)), latency)

    def _admin(self, request: IncomingRequest) -> Fault:
        what = request.path[len(ADMIN_PREFIX) :].strip("/")
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        method = request.method
        if what == "faults":
            if method == "GET":
                return _admin(200, self.engine.to_dict())
            if method == "PUT":
                try:
                    self.load_faults(json.loads(request.body or b"null"))
                except (ValueError, TypeError, ConfigurationError) as exc:
                    return _admin(400, {"error": str(exc)})
                return _admin(200, self.engine.to_dict())
            if method == "DELETE":
                self.engine.clear(query.get("provider"))
                return _admin(200, self.engine.to_dict())
        elif what == "effects" and method == "GET":
            effects = self.effects(query.get("provider"), query.get("endpoint"))
            return _admin(200, {"count": len(effects), "effects": [e.to_dict() for e in effects]})
        elif what.startswith("webhooks") or what == "deliveries":
            return self._admin_webhooks(what, method, query, request.body)
        elif what == "reset" and method == "POST":
            self.log.clear()
            self.engine.clear()
            self.webhooks.reset()
            for simulator in self._simulators.values():
                simulator.reset()
            return _admin(200, {"reset": True})
        elif what == "" and method == "GET":
            return _admin(200, {"providers": {n: s.endpoints for n, s in self._simulators.items()}})
        return _admin(404, {"error": f"no admin endpoint {method} {request.path}"})

    def _admin_webhooks(self, what: str, method: str, query: dict[str, str], body: bytes) -> Fault:
        if what == "deliveries" and method == "GET":
            deliveries = self.deliveries(query.get("provider"))
            by_final: dict[str, int] = {}
            by_fate: dict[str, int] = {}
            for d in deliveries:
                by_final[d.final] = by_final.get(d.final, 0) + 1
                by_fate[d.fate] = by_fate.get(d.fate, 0) + 1
            return _admin(
                200,
                {
                    "count": len(deliveries),
                    "by_final": by_final,
                    "by_fate": by_fate,
                    "deliveries": [d.to_dict() for d in deliveries],
                },
            )
        if what == "webhooks/attempts" and method == "GET":
            attempts = [
                a for a in self.webhooks.attempts if query.get("provider") in (None, a.provider)
            ]
            return _admin(
                200, {"count": len(attempts), "attempts": [a.to_dict() for a in attempts]}
            )
        if what == "webhooks" and method == "PUT":
            try:
                urls = json.loads(body or b"null")
                if not isinstance(urls, dict):
                    raise ConfigurationError("a JSON object of callback URLs by provider")
                for provider, url in urls.items():
                    if not self.simulator(provider).sends_webhooks:
                        raise ConfigurationError(f"{provider} sends no status webhooks")
                    if url is not None and not isinstance(url, str):
                        raise ConfigurationError(f"the callback URL of {provider} is a string")
            except (ValueError, ConfigurationError) as exc:
                return _admin(400, {"error": str(exc)})
            for provider, url in urls.items():
                self.webhooks.configure(provider, url)
            method = "GET"
        if what == "webhooks" and method == "GET":
            providers: dict[str, dict[str, Any]] = {}
            for name, simulator in self._simulators.items():
                if simulator.sends_webhooks:
                    entry: dict[str, Any] = {"url": self.webhooks.url(name)}
                    public_key = getattr(simulator, "event_webhook_public_key", None)
                    if public_key is not None:
                        entry["public_key"] = public_key
                    providers[name] = entry
            return _admin(200, {"time_scale": self.webhooks.time_scale, "providers": providers})
        return _admin(404, {"error": f"no admin endpoint {method} /_sandbox/{what}"})

    def __repr__(self) -> str:
        where = self.server.url if self.server.running else "stopped"
        return f"ProviderSandbox({', '.join(self._simulators)}; {where})"
