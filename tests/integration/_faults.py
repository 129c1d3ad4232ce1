"""The provider fault kinds every connector's tests play, and what a provider without
idempotency is expected to do under each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from antifragile.connectors import OutcomeUnknownError
from antifragile.sandbox import Fault, ProviderFault, ProviderSandbox

#: a connector's attempt timeout when the provider answers: generous, so that a busy machine
#: never turns a slow answer into a timeout (and a send into an unknown outcome)
ANSWERED_TIMEOUT = 10.0
#: ... when a scripted fault holds the request without an answer: the timeout ends the wait
HANG_TIMEOUT = 0.3


def _holds_a_request(plans: object) -> bool:
    if isinstance(plans, dict):
        if plans.get("kind") == "hang" or plans.get("lost") == "hang":
            return True
        return any(_holds_a_request(value) for value in plans.values())
    if isinstance(plans, list):
        return any(_holds_a_request(value) for value in plans)
    return False


def attempt_timeout(sandbox: ProviderSandbox) -> float:
    """The attempt timeout of a connector made now for *sandbox*: short only while its fault
    plans hold a request without an answer (a hang, an ambiguous failure lost by a hang)."""
    return HANG_TIMEOUT if _holds_a_request(sandbox.engine.to_dict()) else ANSWERED_TIMEOUT


FAULT_KINDS: dict[str, ProviderFault] = {
    "latency": ProviderFault.latency(0.05),
    "5xx": ProviderFault.error(503),
    "429": ProviderFault.rate_limited(1.0),
    "reset": ProviderFault.reset(),
    "hang": ProviderFault.hang(),
    "malformed": ProviderFault.malformed(),
    "ambiguous": ProviderFault.ambiguous(),
    "ambiguous_hang": ProviderFault.ambiguous("hang"),
}

#: fault kind -> (the call succeeds, effects recorded): a provider without idempotency
#: retries only what it was told was not processed -- a refusal (429), a 5xx in the provider's
#: own error format; whatever may have reached it without an answer is flagged, never resent
NOT_RESENT: dict[str, tuple[bool, int]] = {
    "latency": (True, 1),
    "5xx": (True, 1),
    "429": (True, 1),
    "reset": (False, 0),
    "hang": (False, 0),
    "malformed": (False, 0),
    "ambiguous": (False, 1),
    "ambiguous_hang": (False, 1),
}


async def sent_once_or_flagged(
    sandbox: ProviderSandbox,
    provider: str,
    endpoint: str,
    kind: str,
    call: Callable[[], Awaitable[object]],
    *,
    unknown: type[OutcomeUnknownError] = OutcomeUnknownError,
) -> None:
    """Play fault *kind* on the next request to *provider*'s *endpoint*, then *call* the
    operation once, and check what :data:`NOT_RESENT` says: the call succeeds or raises a
    non-retryable *unknown*, the effects recorded, and one request sent (two after a 429 or a
    5xx in the provider's error format: the provider said it did not act)."""
    sandbox.faults(provider, endpoint, script=[FAULT_KINDS[kind]])
    succeeds, effects = NOT_RESENT[kind]
    if succeeds:
        await call()
    else:
        with pytest.raises(unknown) as caught:
            await call()
        assert not caught.value.retryable
    assert len(sandbox.effects(provider)) == effects
    assert sum(1 for r in sandbox.requests if r.method == "POST") == (
        2 if kind in ("429", "5xx") else 1
    )


#: what a gateway in front of a provider answers when it lost the provider's answer: not the
#: provider speaking, so the request may have been handled -- the outcome is unknown
GATEWAY_FAULTS: dict[str, Fault] = {
    "bodiless 502": Fault.ok(502),
    "html 504": Fault.ok(
        504,
        body=b"<html><body><h1>504 Gateway Time-out</h1></body></html>",
        headers={"content-type": "text/html"},
    ),
}
