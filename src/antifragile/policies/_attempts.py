"""Retrying a block of code: ``for attempt in policy.attempts(): with attempt: ...``.

Some code is not one function call (a request, a check of its answer, a log line), and wrapping
it in a function only to pass it to :meth:`~antifragile.Policy.call` is awkward. The loop below
runs the block as attempts of one logical call (as ``stamina.retry_context`` does)::

    for attempt in policy.attempts(operation="fetch_order"):
        with attempt:
            order = client.get(f"/orders/{order_id}").json()

    async for attempt in policy.attempts_async():
        with attempt:
            order = (await client.get(f"/orders/{order_id}")).json()

What applies, from the policy:

- the **rate limiter** admits the loop once, before the first attempt;
- the **deadline** (``total_timeout``, or ``Retry.deadline`` when sooner, or that of a call in
  progress around the loop) bounds the whole loop; every attempt also gets the per-attempt
  ``timeout``. Both are published to the block (:func:`~antifragile.policies.time_remaining`,
  which the resilient clients read). In async code they are enforced: the block is cancelled
  when its time is up and the attempt fails with ``UpstreamTimeoutError`` (or
  ``DeadlineExceededError``), like a timed-out call;
- the **breaker** admits each attempt at ``with attempt`` (an open breaker raises
  ``CircuitOpenError`` there, before the block runs) and records its outcome;
- the **retry** policy decides after each failure, exactly as for a call: back-off or
  ``Retry-After`` delay, attempts, deadline and **retry budget**; the waits run on the policy's
  clock;
- the observers get the same events as for a call.

A failure that is retried is swallowed by ``with attempt`` and the loop goes on; otherwise the
block's own exception propagates, with its attempt history (``exc.attempts``). A block that
completes ends the loop. The bulkhead, hedging, fallback and cache apply to calls only.
``retry_on_result`` does not apply (a block returns nothing): raise to retry.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Final

from antifragile.errors import AttemptRecord, ConfigurationError, UpstreamTimeoutError
from antifragile.observability._context import current_request_id
from antifragile.policies._breaker import CircuitState
from antifragile.policies._chain import Chain, attempt_finished
from antifragile.policies._deadline import CallInfo, current_call
from antifragile.policies._timeout import TimeoutScope, watchdog

if TYPE_CHECKING:
    from contextvars import Token

    from antifragile.policies._pipeline import Policy

_NO_TOKEN: Final = -1
_background: set[asyncio.Task[None]] = set()  # failures a shared breaker records after a give-up


class Attempt:
    """One attempt at the block (a context manager); ``number`` counts from 1."""

    __slots__ = ("_loop", "number")

    def __init__(self, loop: _Loop, number: int) -> None:
        self._loop = loop
        self.number = number

    def __enter__(self) -> Attempt:
        self._loop.enter(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._loop.exit(self, exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class _Loop:
    """The state of one loop, shared by its sync and async forms."""

    def __init__(self, chain: Chain, policy: Policy, info: CallInfo, asynchronous: bool) -> None:
        self.chain = chain
        self.policy = policy
        self.info = info
        self.asynchronous = asynchronous
        self.number = 0
        self.delay = 0.0  # the wait before the next attempt
        self.history: list[AttemptRecord] = []
        self.finished = False
        self.entered = False
        self.token = _NO_TOKEN  # the breaker's admission of the current attempt
        self.pending: tuple[int, BaseException, float] | None = None  # a failure to record
        self.started = 0.0
        self.context: Token[CallInfo | None] | None = None
        self.scope: TimeoutScope | None = None
        self.by_total = False
        breaker = policy.breaker
        if breaker is not None and breaker.shares_state and not asynchronous:
            raise ConfigurationError(
                f"{type(breaker).__name__} keeps its state in a store and needs async "
                "calls; use policy.attempts_async() or a process-local breaker"
            )
        rate = policy.rate
        if rate is not None and rate.shares_state and not asynchronous:
            raise ConfigurationError(
                f"{type(rate).__name__} keeps its state in a store and needs async "
                "calls; use policy.attempts_async() or a process-local rate limiter"
            )

    # -- between attempts -------------------------------------------------------------------

    def begin(self) -> None:
        """Before the first attempt (after the rate limiter): deadlines and the budget."""
        parent = current_call.get()
        if parent is not None:
            self.info.inherit(parent)
        total = self.policy.total_timeout
        if total is not None:
            deadline = self.chain.clock.monotonic() + total
            if self.info.deadline is None or deadline < self.info.deadline:
                self.info.deadline = deadline
        retry = self.policy.retry
        if retry is not None:
            retry.start(self.chain, self.info)

    def next_attempt(self) -> Attempt | None:
        """The next attempt, or ``None`` when the loop is over."""
        if self.finished or (self.number and not self.entered):
            return None  # done, or the previous attempt was never used
        self.number += 1
        self.entered = False
        return Attempt(self, self.number)

    # -- one attempt --------------------------------------------------------------------------

    def enter(self, attempt: Attempt) -> None:
        if self.entered:
            raise ConfigurationError("each attempt is entered once: `with attempt:` in the loop")
        self.entered = True
        info, chain = self.info, self.chain
        now = chain.clock.monotonic()
        deadline, self.by_total = info.deadline, True
        timeout = self.policy.timeout
        if timeout is not None and (deadline is None or now + timeout < deadline):
            deadline, self.by_total = now + timeout, False
        if info.deadline is not None and info.deadline <= now:
            self.finished = True
            raise chain.deadline_error(info)
        breaker = self.policy.breaker
        if breaker is not None and self.token == _NO_TOKEN:
            snap = breaker.snapshot
            try:
                self.token = (
                    snap.generation
                    if snap.state is CircuitState.CLOSED
                    else breaker.acquire(operation=info.operation)
                )
            except BaseException:
                self.finished = True
                raise
        info.attempt_deadline = deadline
        self.context = current_call.set(info)
        if self.asynchronous and deadline is not None:
            dog = watchdog()
            self.scope = dog.enter(dog.loop_time() + (deadline - now))
        self.started = chain.clock.monotonic()

    def exit(self, attempt: Attempt, exc: BaseException | None) -> bool:
        """Record the attempt; ``True`` swallows *exc* (it will be retried)."""
        info, chain, policy = self.info, self.chain, self.policy
        duration = chain.clock.monotonic() - self.started
        scope, self.scope = self.scope, None
        if scope is not None:
            watchdog().exit(scope)
        if self.context is not None:
            current_call.reset(self.context)
            self.context = None
        info.attempt_deadline = None
        token, self.token = self.token, _NO_TOKEN
        breaker = policy.breaker
        if (
            scope is not None
            and scope.expired
            and isinstance(exc, asyncio.CancelledError)
            and scope.task.uncancel() == 0
        ):
            exc = self._timed_out() if not self.by_total else chain.deadline_error(info)
            replaced = True
        else:
            replaced = False
        if chain.observed and (exc is None or isinstance(exc, Exception)):
            attempt_finished(chain, info, attempt.number, duration, exc)
        if exc is None:
            self.finished = True
            if breaker is not None and token != _NO_TOKEN:
                breaker.on_success(token, duration)
            return False
        if not isinstance(exc, Exception):  # cancelled, interrupted: no outcome
            self.finished = True
            if breaker is not None and token != _NO_TOKEN:
                breaker.release(token)
            return False
        retry = policy.retry
        delay = (
            None
            if retry is None
            else retry.after_failure(
                chain, info, exc, attempt.number, self.delay, self.history, duration
            )
        )
        if breaker is not None and token != _NO_TOKEN:
            if not breaker.shares_state:
                breaker.on_failure(token, exc, duration)
            elif delay is not None:
                self.pending = (token, exc, duration)  # awaited before the next attempt
            else:
                task = asyncio.get_running_loop().create_task(
                    breaker.aon_failure(token, exc, duration)
                )
                _background.add(task)
                task.add_done_callback(_background.discard)
        if delay is None:
            self.finished = True
            if replaced:
                raise exc from None
            return False
        self.delay = delay
        return True

    def _timed_out(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"attempt timed out after {self.policy.timeout:g}s",
            provider=self.chain.name,
            operation=self.info.operation,
            request_id=current_request_id(),
            replay_safe=self.info.replay_safe,
        )


class SyncAttempts:
    """The attempts of :meth:`Policy.attempts <antifragile.Policy.attempts>` (an iterator)."""

    def __init__(self, chain: Chain, policy: Policy, info: CallInfo) -> None:
        self._loop = _Loop(chain, policy, info, asynchronous=False)

    def __iter__(self) -> SyncAttempts:
        return self

    def __next__(self) -> Attempt:
        loop = self._loop
        if loop.number == 0:
            rate = loop.policy.rate
            if rate is not None:
                wait = rate.reserve(1.0, loop.info.operation)
                if wait > 0:
                    loop.chain.clock.sleep(wait)
            loop.begin()
        elif not loop.finished and loop.entered:
            loop.chain.clock.sleep(loop.delay)
        attempt = loop.next_attempt()
        if attempt is None:
            raise StopIteration
        return attempt


class AsyncAttempts:
    """The attempts of :meth:`Policy.attempts_async <antifragile.Policy.attempts_async>`."""

    def __init__(self, chain: Chain, policy: Policy, info: CallInfo) -> None:
        self._loop = _Loop(chain, policy, info, asynchronous=True)

    def __aiter__(self) -> AsyncAttempts:
        return self

    async def __anext__(self) -> Attempt:
        loop = self._loop
        breaker = loop.policy.breaker
        if loop.number == 0:
            rate = loop.policy.rate
            if rate is not None:
                if rate.shares_state:
                    wait = await rate.areserve(1.0, loop.info.operation)
                else:
                    wait = rate.reserve(1.0, loop.info.operation)
                if wait > 0:
                    try:
                        await loop.chain.clock.asleep(wait)
                    except BaseException:
                        rate.refund()
                        raise
            loop.begin()
        elif not loop.finished and loop.entered:
            pending, loop.pending = loop.pending, None
            if pending is not None and breaker is not None:
                await breaker.aon_failure(*pending)
            await loop.chain.clock.asleep(loop.delay)
        attempt = loop.next_attempt()
        if attempt is None:
            raise StopAsyncIteration
        if breaker is not None and breaker.shares_state:
            snap = breaker.snapshot
            if snap.state is not CircuitState.CLOSED:  # may need the store to decide
                try:
                    loop.token = await breaker.aacquire(operation=loop.info.operation)
                except BaseException:
                    loop.finished = True
                    raise
        return attempt
