"""HTTP layer: :class:`ResilientClient` over httpx, and provider rate-limit header parsing."""

from antifragile.http._client import ResilientClient, SyncResilientClient
from antifragile.http._headers import parse_rate_limit

__all__ = ["ResilientClient", "SyncResilientClient", "parse_rate_limit"]
