"""The provider fault kinds every connector's tests play, and what a provider without
idempotency is expected to do under each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from antifragile.connectors import OutcomeUnknownError
from antifragile.sandbox import ProviderFault, ProviderSandbox

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
#: retries only refusals (429); whatever may have reached it is flagged, never resent
NOT_RESENT: dict[str, tuple[bool, int]] = {
    "latency": (True, 1),
    "5xx": (False, 0),
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
    non-retryable *unknown*, the effects recorded, and one request sent (two after a 429)."""
    sandbox.faults(provider, endpoint, script=[FAULT_KINDS[kind]])
    succeeds, effects = NOT_RESENT[kind]
    if succeeds:
        await call()
    else:
        with pytest.raises(unknown) as caught:
            await call()
        assert not caught.value.retryable
    assert len(sandbox.effects(provider)) == effects
    assert sum(1 for r in sandbox.requests if r.method == "POST") == (2 if kind == "429" else 1)
