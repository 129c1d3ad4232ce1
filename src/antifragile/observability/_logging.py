"""Structured logs: one JSON object per line, with the request id, the trace id, and nothing
secret or personal.

``antifragile serve``, ``worker`` and ``scheduler`` call :func:`configure_process` once their
arguments are checked; a program of your own may call :func:`configure_logging` where it
starts::

    with configure_logging(json=True, level="INFO", secrets=[api_key]):
        main()

Both change the whole process (the root logger, structlog, tracing) and return a handle that
puts it all back (``restore()``, or the end of the ``with`` block).

Every record -- from :mod:`structlog` loggers and from the standard library's ``logging`` (which
the project's modules use) -- goes through the same processors:

* ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, the message as ``event``, and the
  fields given with ``extra={...}`` (``session``, ``step``, ``reason``, ``phone``...);
* ``request_id`` (the current one) and ``trace_id`` (when tracing is on);
* httpx's and uvicorn's request lines rebuilt from allow-listed fields (method, host, path
  without its query string, status: :mod:`antifragile.observability._records`), never their
  free text;
* **redaction**, last before rendering: every string goes through
  :func:`antifragile.errors.redact` (tokens, keys, signatures, ``Authorization`` values, and the
  literal *secrets* given here or to :func:`add_secrets`), then phone numbers and email
  addresses are masked (``+4477•••••23``, ``a•••@example.com``); fields named like a
  credential (``token``, ``api_key``, ``password``...) are replaced whole.

Redaction is a safety net, not a licence: log masked values (``mask_phone``) in the first place.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import IO, Any, Self

import structlog

from antifragile.observability._context import current_request_id
from antifragile.observability._records import structure_record
from antifragile.observability._redaction import REDACTED, mask_email, mask_phone, mask_pii, redact
from antifragile.observability._tracing import current_trace_id

__all__ = [
    "LOG_FORMAT_ENV",
    "LoggingSetup",
    "ProcessSetup",
    "add_secrets",
    "configure_logging",
    "configure_process",
    "redact_event",
    "secrets_from_env",
]

#: field names whose value is a credential: replaced whole
SECRET_FIELDS = frozenset(
    {
        "authorization",
        "token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
        "secret",
        "client_secret",
        "password",
        "signature",
        "verify_token",
        "cookie",
    }
)
#: field names whose value is a phone number or an email address: masked whole
PII_FIELDS = frozenset({"phone", "to", "from", "sender", "recipient", "email", "contact"})
#: fields the processors add themselves: never scanned
_OWN_FIELDS = frozenset({"timestamp", "level", "logger", "request_id", "trace_id", "span_id"})
#: attributes of a :class:`logging.LogRecord` that are not ``extra=`` fields
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's colored copy of the message
}

#: the first keys of a ``text`` (logfmt) line; the record's other fields follow
TEXT_KEY_ORDER = ("timestamp", "level", "logger", "event")

_secrets: tuple[str, ...] = ()
_HANDLER_NAME = "antifragile-structlog"


def add_secrets(values: Iterable[str | None]) -> None:
    """Literal values (tokens, keys) that must never appear in a log line, in addition to the
    patterns :func:`antifragile.errors.redact` always removes."""
    global _secrets
    found = {v for v in values if v and len(v) >= 4}
    _secrets = tuple(sorted({*_secrets, *found}, key=len, reverse=True))


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_pii(redact(value, secrets=_secrets))
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: _clean_field(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _clean(str(value), depth)


def _clean_field(key: str, value: Any, depth: int = 0) -> Any:
    lowered = key.lower()
    if lowered in SECRET_FIELDS or lowered.endswith(("_token", "_secret", "_key", "password")):
        return REDACTED if value else value
    if lowered in PII_FIELDS and isinstance(value, str) and value:
        if "\u2022" in value:  # masked already
            return value
        return mask_email(value) if "@" in value else mask_phone(value)
    return _clean(value, depth)


def redact_event(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The redaction processor (see the module docs): secrets out, phones and emails
    masked, in every field."""
    for key in list(event_dict):
        if key in _OWN_FIELDS or key.startswith("_"):
            continue
        event_dict[key] = _clean_field(key, event_dict[key])
    return event_dict


def add_context(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``request_id`` and ``trace_id`` when there are current ones."""
    if "request_id" not in event_dict:
        request_id = current_request_id()
        if request_id is not None:
            event_dict["request_id"] = request_id
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def _add_extra(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Copy a standard-library record's ``extra=`` fields into the event (``event`` and
    ``level``-like names are prefixed, never overwritten)."""
    record = event_dict.get("_record")
    if record is None:
        return event_dict
    for key, value in vars(record).items():
        if key in _RECORD_FIELDS or key.startswith("_"):
            continue
        if key in event_dict:
            key = f"extra_{key}"
        event_dict[key] = value
    return event_dict


class _StandardError(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (never to a stream that was
    standard error once and may be closed since: a test runner swaps and closes its own)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # always the current sys.stderr


class LoggingSetup:
    """What :func:`configure_logging` changed, and how to put it back.

    ``handler`` is the handler it added to the root logger. :meth:`restore` (or leaving the
    ``with`` block) removes it, puts back the handler a previous call had installed, the root
    logger's level and structlog's configuration as they were. The literal secrets stay known
    (redaction only ever learns more). Restoring twice is harmless.
    """

    def __init__(self, handler: logging.Handler) -> None:
        root = logging.getLogger()
        self.handler = handler
        self._replaced = [h for h in root.handlers if h.get_name() == _HANDLER_NAME]
        self._level = root.level
        self._structlog = structlog.get_config() if structlog.is_configured() else None
        self._restored = False

    def restore(self) -> None:
        """Put the root logger and structlog back as they were before."""
        if self._restored:
            return
        self._restored = True
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        for old in self._replaced:
            root.addHandler(old)
        root.setLevel(self._level)
        if self._structlog is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**self._structlog)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def configure_logging(
    *,
    json: bool = True,
    level: int | str = "INFO",
    stream: IO[str] | None = None,
    secrets: Iterable[str | None] = (),
) -> LoggingSetup:
    """Send every log record to *stream* (default: standard error, looked up at each record) as
    one JSON object per line (``json=False``: one logfmt line per record, ``key=value`` pairs
    starting with ``timestamp``, ``level``, ``logger`` and ``event``), at *level* and above.

    This changes the whole process (the root logger and structlog): call it once, where your
    program starts. It replaces the handler a previous call installed (so calling it twice is
    safe); *secrets* are added with :func:`add_secrets`. The :class:`LoggingSetup` it returns
    puts everything back (``setup.restore()``, or use it as a context manager); its
    ``handler`` is the handler added.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_context,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=False)
        if json
        else structlog.processors.LogfmtRenderer(key_order=list(TEXT_KEY_ORDER), drop_missing=True)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _add_extra, structure_record],
        pass_foreign_args=True,  # for structure_record, which removes them
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler: logging.Handler = _StandardError() if stream is None else logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    setup = LoggingSetup(handler)  # what to put back, taken before anything changes
    add_secrets(secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return setup


#: ``json`` (the default) or ``text``: how :func:`configure_process` renders logs
LOG_FORMAT_ENV = "ANTIFRAGILE_LOG_FORMAT"
_SECRET_NAME_PARTS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD")


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the ``ANTIFRAGILE_*`` variables named like a credential (``..._TOKEN``,
    ``..._SECRET``, ``..._API_KEY``, ``..._PASSWORD``), each comma-separated part apart."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        upper = name.upper()
        if upper.startswith("ANTIFRAGILE_") and any(p in upper for p in _SECRET_NAME_PARTS):
            found.extend(part.strip() for part in value.split(",") if part.strip())
    return found


class ProcessSetup:
    """What :func:`configure_process` changed: the logging (``logging``, a
    :class:`LoggingSetup`) and whether it turned tracing on (``tracing``). :meth:`restore`
    (or leaving the ``with`` block) flushes and stops the spans it started and puts the
    logging back."""

    def __init__(self, logging_setup: LoggingSetup, tracing: bool) -> None:
        self.logging = logging_setup
        self.tracing = tracing

    def restore(self) -> None:
        """Stop the tracing this set-up started (flushing its last spans), then put the logging
        back as it was."""
        from antifragile.observability._tracing import shutdown_tracing

        try:
            if self.tracing:
                self.tracing = False
                shutdown_tracing()
        finally:
            self.logging.restore()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def configure_process(
    level: int | str = "INFO",
    *,
    secrets: Iterable[str | None] = (),
    log_format: str | None = None,
) -> ProcessSetup:
    """What ``antifragile serve``, ``worker`` and ``scheduler`` do once their arguments are
    checked, around everything they run: logs as JSON on standard error (*log_format*
    ``text``, by default ``ANTIFRAGILE_LOG_FORMAT``: logfmt ``key=value`` lines), with the
    credentials of the environment and *secrets* redacted; tracing as
    ``ANTIFRAGILE_OTEL_EXPORTER`` says.

    Use the :class:`ProcessSetup` it returns as a context manager (or call its ``restore()``):
    on the way out the last spans are flushed and the logging is put back.
    """
    from antifragile.observability._tracing import configure_tracing

    chosen = log_format if log_format is not None else os.environ.get(LOG_FORMAT_ENV, "json")
    text = chosen.strip().lower() == "text"
    setup = configure_logging(json=not text, level=level, secrets=[*secrets_from_env(), *secrets])
    try:
        tracing = configure_tracing()
    except BaseException:
        setup.restore()
        raise
    return ProcessSetup(setup, tracing)
