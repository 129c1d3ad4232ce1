"""What every HTTP connector shares: its configuration lookup and its client's lifecycle."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from antifragile.http import ResilientClient


def base_url_from(value: str | None, env: str, default: str) -> str:
    """The base URL given, else the one in the environment variable *env*, else *default*."""
    return (value or os.environ.get(env) or default).rstrip("/")


class HTTPConnector:
    """A connector over one :class:`~antifragile.ResilientClient`: use it with ``async with``
    or call :meth:`aclose` when done."""

    client: ResilientClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
