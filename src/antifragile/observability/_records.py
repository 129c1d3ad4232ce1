"""Other libraries' log records turned into allow-listed fields before they are rendered.

httpx logs every request as one free text, ``HTTP Request: POST https://host/path?email=...
"HTTP/1.1 200 OK"``, and uvicorn every request it serves as ``client - "GET /path?query
HTTP/1.1" 200``: the query string is where personal data and tokens travel (a customer's email
in a CRM search, a verify token in a webhook handshake). Masking that text after the fact is a
safety net with holes; instead :func:`structure_record` rebuilds such a record's event from the
fields worth keeping and nothing else:

* httpx (``logger`` ``httpx``): ``event`` ``"outbound request"``, ``method``, ``host``, ``path``
  (no query string, no fragment), ``status`` and, for a request sent inside
  :func:`timed_request` (every attempt of a :class:`~antifragile.http.ResilientClient`),
  ``duration_ms``: the time until the response's headers arrived (httpx logs then);
* uvicorn's access log (``logger`` ``uvicorn.access``): ``event`` ``"inbound request"``,
  ``client``, ``method``, ``path`` (no query string) and ``status``.

A record of another shape, or one these loggers word differently, is left as it is (and goes
through the redaction every record gets).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from antifragile.observability._redaction import redact

__all__ = ["structure_record", "timed_request"]

#: when the request being sent in this context started (``time.perf_counter()``)
_request_started: ContextVar[float | None] = ContextVar("antifragile_request_started", default=None)


@contextmanager
def timed_request() -> Iterator[None]:
    """Mark the start of a request sent in the block: httpx's line for it gets its
    ``duration_ms``."""
    token = _request_started.set(time.perf_counter())
    try:
        yield
    finally:
        _request_started.reset(token)


# httpx: 'HTTP Request: %s %s "%s %d %s"' (method, URL, HTTP version, status, reason)
_HTTPX = re.compile(r'^HTTP Request: (?P<method>[A-Z]+) (?P<url>\S+) "\S+ (?P<status>\d{3})\b')


def _path_only(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0] or "/"


def _outbound(event_dict: MutableMapping[str, Any], message: str) -> None:
    match = _HTTPX.match(message)
    if match is None:
        return
    url = urlsplit(match["url"])
    host = url.hostname or ""
    # a path may itself be a credential (a Slack webhook's): redacted with its host in view
    path = redact(f"{host}{_path_only(url.path)}").removeprefix(host) or "/"
    event_dict.update(
        event="outbound request",
        method=match["method"],
        host=host,
        path=path,
        status=int(match["status"]),
    )
    started = _request_started.get()
    if started is not None:
        event_dict["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)


def _inbound(event_dict: MutableMapping[str, Any], args: Any) -> None:
    if not isinstance(args, tuple) or len(args) != 5:
        return
    client, method, full_path, _version, status = args
    event_dict.update(
        event="inbound request",
        client=str(client),
        method=str(method),
        path=_path_only(str(full_path)),
        status=int(status) if isinstance(status, int) else str(status),
    )


def structure_record(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor (for records of the standard library's ``logging``) described
    in the module docs. It reads the record's arguments from ``positional_args`` (the
    formatter's ``pass_foreign_args=True``) and removes them: they are never rendered."""
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if not isinstance(record, logging.LogRecord):
        return event_dict
    if record.name == "httpx":
        _outbound(event_dict, str(event_dict.get("event", "")))
    elif record.name == "uvicorn.access":
        _inbound(event_dict, args)
    return event_dict
