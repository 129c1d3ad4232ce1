"""The provider fault kinds every connector's tests play, and what a provider without
idempotency is expected to do under each."""

from __future__ import annotations

from antifragile.sandbox import ProviderFault

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
