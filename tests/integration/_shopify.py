"""Building ShopifyConnectors for a sandbox in tests (shared by the REST and GraphQL tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from antifragile import FakeClock
from antifragile.connectors import ShopifyConnector
from antifragile.sandbox import ProviderSandbox
from tests.integration._faults import ANSWERED_TIMEOUT, attempt_timeout

Connect = Callable[..., ShopifyConnector]


@asynccontextmanager
async def connectors(
    target: ProviderSandbox | str, clock: FakeClock, token: str
) -> AsyncIterator[Connect]:
    """A factory of connectors for a sandbox's Shopify (the attempt timeout short only while a
    scripted fault hangs) or for a base URL (an answering server), on the fake *clock*; each one
    made is closed on the way out."""
    base_url = target if isinstance(target, str) else target.base_url("shopify")
    made: list[ShopifyConnector] = []

    def factory(token: str = token, **options: Any) -> ShopifyConnector:
        options.setdefault(
            "timeout", ANSWERED_TIMEOUT if isinstance(target, str) else attempt_timeout(target)
        )
        options.setdefault("base_url", base_url)
        options.setdefault("clock", clock)
        connector = ShopifyConnector(token, **options)
        made.append(connector)
        return connector

    try:
        yield factory
    finally:
        for connector in made:
            await connector.aclose()
