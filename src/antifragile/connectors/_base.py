"""What every HTTP connector shares: its configuration lookup, its client's lifecycle, and
keeping personal data out of its errors."""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

from antifragile.errors import (
    AntifragileError,
    ConfigurationError,
    IntegrationError,
)
from antifragile.http import ResilientClient
from antifragile.observability._redaction import mask_values, personal_values

P = ParamSpec("P")
R = TypeVar("R")

_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def mask_exception(error: BaseException, values: Iterable[str | None]) -> None:
    """Mask the phone numbers and email addresses *values* (see
    :func:`~antifragile.errors.mask_values`), and any other email address, in the message and
    detail of *error* and of the errors it was raised from, in place: a job's history and the
    dead-letter queue keep the message, never the personal data a provider echoed back."""
    known = [v for v in values if v]

    def clean(text: str) -> str:
        return mask_values(text, [*known, *personal_values(_EMAIL_IN_TEXT.findall(text))])

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AntifragileError):
            message = clean(current.message)
            if message != current.message:
                current.message = message
                current.args = (message, *current.args[1:])
            if isinstance(current, IntegrationError) and current.detail:
                current.detail = clean(current.detail)
        else:  # a library's error (aiosmtplib's names the refused address): its text args
            current.args = tuple(clean(a) if isinstance(a, str) else a for a in current.args)
        current = current.__cause__ or current.__context__


def masks_pii(
    *params: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorator of a connector method: an error escaping it has the phone numbers and email
    addresses found in the arguments *params* (strings, sequences, mappings) masked."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except AntifragileError as exc:
                bound = signature.bind_partial(*args, **kwargs).arguments
                mask_exception(exc, personal_values(bound.get(p) for p in params))
                raise

        return wrapper

    return decorate


def base_url_from(value: str | None, env: str, default: str) -> str:
    """The base URL given, else the one in the environment variable *env*, else *default*."""
    return (value or os.environ.get(env) or default).rstrip("/")


def required_from(value: str | None, env: str, *, needs: str, arg: str) -> str:
    """*value*, else the environment variable *env*; neither is a ConfigurationError saying
    what the connector *needs* (``"Resend needs an API key"``) and how to give it."""
    found = value or os.environ.get(env)
    if not found:
        raise ConfigurationError(f"{needs}: pass {arg}= or set {env}")
    return found


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
