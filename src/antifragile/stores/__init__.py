"""Stores layer: state shared across processes, as atomic operations on four backends.

``memory://`` (in the package; tests and single processes), ``sqlite:///path`` (the default),
``postgresql://...`` and ``redis://...``; see :func:`open_store`.
"""

from antifragile.stores._protocols import (
    JSON,
    BreakerRecord,
    BreakerStore,
    Claim,
    IdempotencyRecord,
    IdempotencyStatus,
    IdempotencyStore,
    KeyValueStore,
    Lease,
    LeaseStore,
    RateLimitStore,
    Store,
    TokenGrant,
    Versioned,
    WindowTotals,
)
from antifragile.stores._shared import SharedCircuitBreaker, SharedTokenBucket
from antifragile.stores._url import SCHEMES, make_store, open_store

__all__ = [
    "JSON",
    "SCHEMES",
    "BreakerRecord",
    "BreakerStore",
    "Claim",
    "IdempotencyRecord",
    "IdempotencyStatus",
    "IdempotencyStore",
    "KeyValueStore",
    "Lease",
    "LeaseStore",
    "RateLimitStore",
    "SharedCircuitBreaker",
    "SharedTokenBucket",
    "Store",
    "TokenGrant",
    "Versioned",
    "WindowTotals",
    "make_store",
    "open_store",
]
