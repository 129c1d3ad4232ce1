"""Building ShopifyConnectors for a sandbox in tests (shared by the REST and GraphQL tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from antifragile import FakeClock
from antifragile.connectors import ShopifyConnector

Connect = Callable[..., ShopifyConnector]


@asynccontextmanager
async def connectors(
    base_url: str, clock: FakeClock, token: str, attempt_timeout: float
) -> AsyncIterator[Connect]:
    """A factory of connectors for *base_url* on the fake *clock* (*attempt_timeout* seconds per
    attempt); each one made is closed on the way out."""
    made: list[ShopifyConnector] = []

    def factory(token: str = token, **options: Any) -> ShopifyConnector:
        options.setdefault("timeout", attempt_timeout)
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
