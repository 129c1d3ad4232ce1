"""Connectors layer: one module per provider -- its operations, its default policy, and how it
stays exactly-once.

Each connector is configured from ``ANTIFRAGILE_<PROVIDER>_BASE_URL`` and its credentials (for
Resend: ``ANTIFRAGILE_RESEND_BASE_URL`` and ``ANTIFRAGILE_RESEND_API_KEY``), so any of them can
be pointed at the :class:`~antifragile.sandbox.ProviderSandbox` or any stand-in server.
"""

from antifragile.connectors._resend import (
    ResendConnector,
    SentEmail,
    idempotency_key_for,
    resend_policy,
)

__all__ = ["ResendConnector", "SentEmail", "idempotency_key_for", "resend_policy"]
