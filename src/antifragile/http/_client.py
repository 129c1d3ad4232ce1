"""ResilientClient: httpx behind a policy, one client per provider.

For every request it

* sends ``x-request-id`` (the current context's request id, or a new one per logical call, the
  same for each of its attempts) and ``Idempotency-Key`` when given one;
* bounds each attempt by the policy's deadlines: its httpx timeouts, and the reading of the
  body -- httpx's read timeout starts again with every chunk, so a body that trickles in would
  never trip it. The async client's attempt is cancelled at the deadline, wherever it is; the
  sync client reads the body chunk by chunk and stops at the first chunk after the deadline;
* reads the provider's rate-limit headers and feeds them to the policy's rate limiter, so the
  client slows down before the provider starts answering 429;
* turns error responses and transport failures into the antifragile exception tree, with
  provider, operation, status, request id and a redacted excerpt of the body;
* retries only what is safe to send again: idempotent methods, requests carrying an idempotency
  key, and failures that happened before the request was sent (``replay_safe=`` overrides);
* when given the provider's rule (``not_processed=``), treats a 5xx that carries the provider's
  own error body as an answer that the request was **not** processed -- safe to send again --
  rather than one whose outcome is unknown (a bodiless or HTML gateway 502/504 stays unknown).

:class:`ResilientClient` is async; :class:`SyncResilientClient` has the same interface, blocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

import httpx

from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    classify_exception,
    classify_response,
    is_idempotent,
    redact,
)
from antifragile.errors._envelope import Envelope, acapture, capture
from antifragile.http._headers import parse_rate_limit
from antifragile.observability._context import (
    current_request_id,
    new_request_id,
    request_context,
    reset_request_id,
    set_request_id,
)
from antifragile.observability._records import timed_request
from antifragile.observability._tracing import outbound_span
from antifragile.policies import Policy, time_remaining

Timeout = float | httpx.Timeout | None

#: a provider's rule: whether a 5xx response carries its own error body (it was not processed)
NotProcessedRule = Callable[[httpx.Response], bool]

#: a provider's reading of an error answer: the error refined (a 429's real wait...), or as is
ErrorRefiner = Callable[[IntegrationError, httpx.Response], IntegrationError]

#: a deadline this close to the configured timeout keeps the client's own timeout object
_TIMEOUT_SLACK = 0.05


def _rate_headers(headers: httpx.Headers) -> dict[str, str] | None:
    """The rate-limit related headers, lower-cased, or ``None`` when there are none.

    Reads the raw header list once: this runs on every response, and most have none.
    """
    raw = headers.raw
    names = b"\n".join([name for name, _ in raw]).lower()
    if b"rate" not in names and b"retry-after" not in names and b"call-limit" not in names:
        return None  # the common case: one scan of the names, no per-header work
    found: dict[str, str] | None = None
    for raw_name, raw_value in raw:
        name = raw_name.lower()
        if (
            (b"rate" in name and (b"ratelimit" in name or b"rate-limit" in name))
            or b"api-call-limit" in name
            or name == b"retry-after"
        ):
            if found is None:
                found = {}
            key = name.decode("latin-1")
            value = raw_value.decode("latin-1")
            found[key] = f"{found[key]}, {value}" if key in found else value
    return found


def _past_deadline(request: httpx.Request) -> httpx.ReadTimeout | None:
    remaining = time_remaining()
    if remaining is None or remaining > 0:
        return None
    return httpx.ReadTimeout("the deadline passed while the body was read", request=request)


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that gives up at the first chunk arriving after the deadline."""

    def __init__(self, stream: httpx.SyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            late = _past_deadline(self._request)
            if late is not None:
                raise late
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _send_within(client: httpx.Client, request: httpx.Request) -> httpx.Response:
    """Send *request*; under a deadline, read the body chunk by chunk against it.

    Only the sync client needs this: an async attempt is cancelled when its deadline passes,
    wherever it is -- reading the body included."""
    if time_remaining() is None:
        return client.send(request)
    response = client.send(request, stream=True)
    try:
        response.stream = _DeadlineStream(cast(httpx.SyncByteStream, response.stream), request)
        response.read()
    finally:
        response.close()
    return response


def _path_of(url: str) -> str:
    if url.startswith("/"):
        return url.split("?", 1)[0].split("#", 1)[0]
    return urlsplit(url).path or "/"


class _ClientCore:
    """What the sync and async clients share: request preparation and response handling."""

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        policy: Policy | None,
        timeout: Timeout,
        idempotency_header: str,
        request_id_header: str,
        secrets: Iterable[str],
        not_processed: NotProcessedRule | None = None,
    ) -> None:
        if not provider:
            raise ConfigurationError("a ResilientClient needs a provider name")
        self.provider = provider
        self.base_url = base_url
        self.policy = policy if policy is not None else Policy(provider)
        self.timeout = timeout
        self.idempotency_header = idempotency_header
        self.request_id_header = request_id_header
        self._secrets = tuple(s for s in secrets if s)
        self.not_processed = not_processed
        #: the provider's own reading of an error answer, applied before any retry decides
        self.refine: ErrorRefiner | None = None

    def _timeout_for(self, timeout: Timeout) -> Timeout | httpx._client.UseClientDefault:
        """The httpx timeout for one attempt: the configured one, cut to the deadline."""
        remaining = time_remaining()
        if remaining is None or (
            timeout is self.timeout
            and isinstance(timeout, int | float)
            and remaining >= timeout - _TIMEOUT_SLACK
        ):
            # the client's own timeout object already says it: no per-request copy
            return httpx.USE_CLIENT_DEFAULT if timeout is self.timeout else timeout
        remaining = max(remaining, 0.001)
        if timeout is None:
            return remaining
        if isinstance(timeout, httpx.Timeout):
            return httpx.Timeout(
                connect=min(timeout.connect or remaining, remaining),
                read=min(timeout.read or remaining, remaining),
                write=min(timeout.write or remaining, remaining),
                pool=min(timeout.pool or remaining, remaining),
            )
        return min(float(timeout), remaining)

    def _prepare(
        self,
        method: str,
        url: str,
        idempotency_key: str | None,
        operation: str | None,
        replay_safe: bool | None,
    ) -> tuple[list[tuple[str, str]], str, bool, str, bool]:
        """Our headers, the request id, replay safety, the operation's name, and whether the
        request id is new (not from the context)."""
        current = current_request_id()
        request_id = current or new_request_id()
        ours = [(self.request_id_header, request_id)]
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 256:
                raise ConfigurationError("an idempotency key must be 1 to 256 characters long")
            ours.append((self.idempotency_header, idempotency_key))
        method = method.upper()
        if operation is None:
            operation = f"{method} {_path_of(url)}"
        safe = is_idempotent(method, idempotency_key) if replay_safe is None else replay_safe
        return ours, request_id, safe, operation, current is None

    def _scrub(self, error: IntegrationError) -> IntegrationError:
        if self._secrets:
            error.message = redact(error.message, secrets=self._secrets)
            error.args = (error.message,)
            if error.detail:
                error.detail = redact(error.detail, secrets=self._secrets)
        return error

    def _transport_error(
        self, exc: Exception, operation: str, safe: bool, request_id: str
    ) -> IntegrationError | None:
        error = classify_exception(
            exc,
            provider=self.provider,
            operation=operation,
            idempotent=safe,
            request_id=request_id,
        )
        return None if error is None else self._scrub(error)

    def _check(
        self, response: httpx.Response, operation: str, safe: bool, request_id: str
    ) -> IntegrationError | None:
        """Feed rate-limit headers to the limiter; the error the response stands for, if any.

        HTTP-date and epoch headers are read once, against one time: the policy's clock (a
        ``FakeClock`` in tests), never the system's -- so the limiter's pause and the error's
        ``retry_after`` are the same number of seconds."""
        limiter = self.policy.rate
        now: float | None = None
        if limiter is not None:
            rate_headers = _rate_headers(response.headers)
            if rate_headers is not None:
                now = self.policy.clock.time()
                info = parse_rate_limit(rate_headers, now, status=response.status_code)
                limiter.observe(info, operation=operation)
        if response.status_code < 400:
            return None
        error = classify_response(
            response,
            provider=self.provider,
            operation=operation,
            idempotent=safe,
            request_id=request_id,
            now=self.policy.clock.time() if now is None else now,
        )
        if error is None:
            return None
        if (
            response.status_code >= 500
            and not error.replay_safe
            and self.not_processed is not None
            and _answered(self.not_processed, response)
        ):
            # the provider itself answered that it failed: it did not act on the request
            error.replay_safe = True
            error.message = f"{error.message} (the provider's error answer: not processed)"
            error.args = (error.message,)
        if self.refine is not None:
            error = self.refine(error, response)
        return self._scrub(error)


def _answered(rule: NotProcessedRule, response: httpx.Response) -> bool:
    """Whether *rule* recognises *response* as the provider's own error answer (a rule that
    fails, on a body it cannot read, says no: the outcome stays unknown)."""
    try:
        return bool(rule(response))
    except (httpx.ResponseNotRead, ValueError, TypeError, AttributeError, RecursionError):
        return False


class ResilientClient(_ClientCore):
    """An async HTTP client for one provider, every request going through a policy.

    >>> async with ResilientClient("shopify", base_url=url, policy=policy) as shopify:
    ...     r = await shopify.post("/customers.json", json=body, idempotency_key=key)

    Arguments besides the ones below go to :class:`httpx.AsyncClient` (``headers``, ``auth``,
    ``transport``, ``limits``...), or pass a ready ``client=``. ``secrets`` are literal values
    (tokens, keys) that must never appear in an error message, in addition to the patterns
    :func:`~antifragile.errors.redact` always removes.
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str = "",
        policy: Policy | None = None,
        timeout: Timeout = 10.0,
        client: httpx.AsyncClient | None = None,
        idempotency_header: str = "Idempotency-Key",
        request_id_header: str = "x-request-id",
        secrets: Iterable[str] = (),
        not_processed: NotProcessedRule | None = None,
        **httpx_options: Any,
    ) -> None:
        super().__init__(
            provider,
            base_url=base_url,
            policy=policy,
            timeout=timeout,
            idempotency_header=idempotency_header,
            request_id_header=request_id_header,
            secrets=secrets,
            not_processed=not_processed,
        )
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, **httpx_options
        )

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
        if self._owns_client:
            await self.client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str | None = None,
        idempotency_key: str | None = None,
        replay_safe: bool | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,  # noqa: ASYNC109 - the httpx timeout of each attempt
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request through the policy; returns the (successful) response.

        Raises an :class:`~antifragile.IntegrationError` subclass when the request fails for
        good. ``kwargs`` go to :meth:`httpx.AsyncClient.request` (``json``, ``data``,
        ``params``, ``content``...).
        """
        ours, request_id, safe, operation, fresh_id = self._prepare(
            method, url, idempotency_key, operation, replay_safe
        )
        attempt_timeout = self.timeout if timeout is None else timeout
        client = self.client

        async def attempt() -> httpx.Response:
            try:
                # build, then add our headers: cheaper than merging a headers mapping
                request = client.build_request(
                    method,
                    url,
                    headers=headers,
                    timeout=self._timeout_for(attempt_timeout),
                    **kwargs,
                )
                request_headers = request.headers
                for name, value in ours:
                    request_headers[name] = value
                with outbound_span(self.provider, operation, request) as attempt_span:
                    with timed_request():  # httpx's line for it gets its duration
                        response = await client.send(request)
                    attempt_span.set_attribute("http.response.status_code", response.status_code)
            except Exception as exc:
                error = self._transport_error(exc, operation, safe, request_id)
                if error is None:
                    raise
                raise error from exc
            error = self._check(response, operation, safe, request_id)
            if error is not None:
                raise error
            return response

        if not fresh_id:
            return await self.policy.arun(attempt, operation=operation, replay_safe=safe)
        token = set_request_id(request_id)  # events and nested calls see this call's id
        try:
            return await self.policy.arun(attempt, operation=operation, replay_safe=safe)
        finally:
            reset_request_id(token)

    async def request_safe(self, method: str, url: str, **kwargs: Any) -> Envelope[httpx.Response]:
        """Like :meth:`request`, but returns the response envelope and never raises."""
        with request_context(current_request_id()):  # one id for the call and its envelope
            return await acapture(self.request, method, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("HEAD", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    def __repr__(self) -> str:
        return f"ResilientClient({self.provider!r}, base_url={self.base_url!r})"


class SyncResilientClient(_ClientCore):
    """The blocking twin of :class:`ResilientClient` (same arguments, same behaviour)."""

    def __init__(
        self,
        provider: str,
        *,
        base_url: str = "",
        policy: Policy | None = None,
        timeout: Timeout = 10.0,
        client: httpx.Client | None = None,
        idempotency_header: str = "Idempotency-Key",
        request_id_header: str = "x-request-id",
        secrets: Iterable[str] = (),
        not_processed: NotProcessedRule | None = None,
        **httpx_options: Any,
    ) -> None:
        super().__init__(
            provider,
            base_url=base_url,
            policy=policy,
            timeout=timeout,
            idempotency_header=idempotency_header,
            request_id_header=request_id_header,
            secrets=secrets,
            not_processed=not_processed,
        )
        self._owns_client = client is None
        self.client = client or httpx.Client(base_url=base_url, timeout=timeout, **httpx_options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str | None = None,
        idempotency_key: str | None = None,
        replay_safe: bool | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request through the policy (see :meth:`ResilientClient.request`)."""
        ours, request_id, safe, operation, fresh_id = self._prepare(
            method, url, idempotency_key, operation, replay_safe
        )
        attempt_timeout = self.timeout if timeout is None else timeout
        client = self.client

        def attempt() -> httpx.Response:
            try:
                # build, then add our headers: cheaper than merging a headers mapping
                request = client.build_request(
                    method,
                    url,
                    headers=headers,
                    timeout=self._timeout_for(attempt_timeout),
                    **kwargs,
                )
                request_headers = request.headers
                for name, value in ours:
                    request_headers[name] = value
                with outbound_span(self.provider, operation, request) as attempt_span:
                    with timed_request():  # httpx's line for it gets its duration
                        response = _send_within(client, request)
                    attempt_span.set_attribute("http.response.status_code", response.status_code)
            except Exception as exc:
                error = self._transport_error(exc, operation, safe, request_id)
                if error is None:
                    raise
                raise error from exc
            error = self._check(response, operation, safe, request_id)
            if error is not None:
                raise error
            return response

        if not fresh_id:
            return self.policy.run(attempt, operation=operation, replay_safe=safe)
        token = set_request_id(request_id)  # events and nested calls see this call's id
        try:
            return self.policy.run(attempt, operation=operation, replay_safe=safe)
        finally:
            reset_request_id(token)

    def request_safe(self, method: str, url: str, **kwargs: Any) -> Envelope[httpx.Response]:
        """Like :meth:`request`, but returns the response envelope and never raises."""
        with request_context(current_request_id()):  # one id for the call and its envelope
            return capture(self.request, method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def __repr__(self) -> str:
        return f"SyncResilientClient({self.provider!r}, base_url={self.base_url!r})"
