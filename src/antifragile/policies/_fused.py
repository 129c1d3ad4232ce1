"""The default pipeline as one function per call, for sync and async code.

A policy in the default order without an observer, fallback, cache or hedging -- the common
case, and the one on every provider call's hot path -- runs here instead of through one small
function per strategy. The steps and their order are exactly those of the composed chain in
:mod:`antifragile.policies._pipeline` (rate limit -> total timeout -> retry -> bulkhead ->
breaker -> attempt timeout -> the call); only the Python frames between them are gone, which
matters when every call is preceded by a network wait that leaves the CPU caches cold. The unit
tests of the pipeline run through this path, and the other configurations through the chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from antifragile.errors import AttemptRecord
from antifragile.policies._breaker import CircuitState
from antifragile.policies._deadline import CallInfo
from antifragile.policies._timeout import watchdog

if TYPE_CHECKING:
    from antifragile.policies._pipeline import AsyncNext, Policy, SyncNext


def fusable(policy: Policy, *, asynchronous: bool) -> bool:
    """Whether *policy* can run as one fused function."""
    from antifragile.policies._pipeline import DEFAULT_ORDER

    if policy.order != DEFAULT_ORDER or policy.observer is not None:
        return False
    if policy.fallback is not None or policy.cache is not None or policy.hedge is not None:
        return False
    if policy.breaker is not None and policy.breaker.shares_state:
        return False
    if policy.rate is not None and policy.rate.shares_state:
        return False
    if asynchronous:
        # without an attempt timeout, the total timeout needs a timer of its own (the chain)
        return policy.total_timeout is None or policy.timeout is not None
    return policy.timeout_strategy == "cooperative"


def fused_sync(policy: Policy) -> SyncNext:
    clock = policy.clock
    mono, sleep = clock.monotonic, clock.sleep
    reserve = policy.rate.reserve if policy.rate is not None else None
    total = policy.total_timeout
    retry = policy.retry
    budget = policy.budget if retry is not None else None
    retry_deadline = retry is not None and retry.deadline is not None
    decide = policy._retry_decision
    bulkhead = policy.bulkhead
    if bulkhead is not None:
        take, give, waiters = bulkhead._tokens.pop, bulkhead._tokens.append, bulkhead._waiters
        bulk_acquire, hand_over = bulkhead.acquire, bulkhead.hand_over
    breaker = policy.breaker
    if breaker is not None:
        snapshot, br_acquire = breaker.holder.get, breaker.acquire
        ok, fail, br_release = breaker.on_success, breaker.on_failure, breaker.release
        timed = breaker.times_calls
    closed = CircuitState.CLOSED
    timeout = policy.timeout
    deadline_error = policy._deadline_error

    def attempt(info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
        if bulkhead is not None:
            try:
                take()
            except IndexError:
                bulk_acquire(operation=info.operation)
        try:
            if breaker is not None:
                snap = snapshot()
                token = (
                    snap.generation
                    if snap.state is closed
                    else br_acquire(operation=info.operation)
                )
                began = mono() if timed else 0.0
            try:
                if timeout is not None:
                    now = mono()
                    until = now + timeout
                    limit = info.deadline
                    if limit is not None and limit <= until:
                        if limit <= now:
                            raise deadline_error(info)
                        until = limit
                    info.attempt_deadline = until
                    try:
                        result = fn(*args, **kwargs)
                    finally:
                        info.attempt_deadline = None
                else:
                    result = fn(*args, **kwargs)
            except Exception as exc:
                if breaker is not None:
                    fail(token, exc, mono() - began if timed else 0.0)
                raise
            except BaseException:
                if breaker is not None:
                    br_release(token)
                raise
            if breaker is not None:
                ok(token, mono() - began if timed else 0.0)
            return result
        finally:
            if bulkhead is not None:
                give(1)
                if waiters:
                    hand_over()

    def call(
        info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if reserve is not None:
            wait = reserve(1.0, info.operation)
            if wait > 0:
                sleep(wait)
        if total is not None:
            deadline = mono() + total
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline
        if retry is None:
            return attempt(info, fn, args, kwargs)
        if budget is not None:
            budget.record_request()
        if retry_deadline:
            policy._retry_deadline(info)
        number, delay = 1, 0.0
        history: list[AttemptRecord] = []
        while True:
            start = mono()
            try:
                return attempt(info, fn, args, kwargs)
            except Exception as exc:
                delay = decide(info, exc, number, delay, history, mono() - start)
            sleep(delay)
            number += 1

    return call


def fused_async(policy: Policy) -> AsyncNext:
    clock = policy.clock
    mono, asleep = clock.monotonic, clock.asleep
    rate = policy.rate
    total = policy.total_timeout
    retry = policy.retry
    budget = policy.budget if retry is not None else None
    retry_deadline = retry is not None and retry.deadline is not None
    decide = policy._retry_decision
    bulkhead = policy.bulkhead
    if bulkhead is not None:
        take, give, waiters = bulkhead._tokens.pop, bulkhead._tokens.append, bulkhead._waiters
        bulk_acquire, hand_over = bulkhead.aacquire, bulkhead.hand_over
    breaker = policy.breaker
    if breaker is not None:
        snapshot, br_acquire = breaker.holder.get, breaker.acquire
        ok, fail, br_release = breaker.on_success, breaker.on_failure, breaker.release
        timed = breaker.times_calls
    closed = CircuitState.CLOSED
    timeout = policy.timeout
    deadline_error, timeout_error = policy._deadline_error, policy._timeout_error

    async def attempt(
        info: CallInfo, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        if bulkhead is not None:
            try:
                take()
            except IndexError:
                await bulk_acquire(operation=info.operation)
        try:
            if breaker is not None:
                snap = snapshot()
                token = (
                    snap.generation
                    if snap.state is closed
                    else br_acquire(operation=info.operation)
                )
                began = mono() if timed else 0.0
            try:
                if timeout is not None:
                    now = mono()
                    until = now + timeout
                    by_total = False
                    limit = info.deadline
                    if limit is not None and limit <= until:
                        if limit <= now:
                            raise deadline_error(info)
                        until, by_total = limit, True
                    info.attempt_deadline = until
                    dog = watchdog()
                    scope = dog.enter(dog.loop_time() + (until - now))
                    try:
                        result = await fn(*args, **kwargs)
                    except asyncio.CancelledError:
                        if scope.expired and scope.task.uncancel() == 0:
                            if by_total:
                                raise deadline_error(info) from None
                            raise timeout_error(info) from None
                        raise
                    finally:
                        dog.exit(scope)
                        info.attempt_deadline = None
                else:
                    result = await fn(*args, **kwargs)
            except Exception as exc:
                if breaker is not None:
                    fail(token, exc, mono() - began if timed else 0.0)
                raise
            except BaseException:
                if breaker is not None:
                    br_release(token)
                raise
            if breaker is not None:
                ok(token, mono() - began if timed else 0.0)
            return result
        finally:
            if bulkhead is not None:
                give(1)
                if waiters:
                    hand_over()

    async def call(
        info: CallInfo,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if rate is not None:
            wait = rate.reserve(1.0, info.operation)
            if wait > 0:
                try:
                    await asleep(wait)
                except BaseException:
                    rate.refund()
                    raise
        if total is not None:
            deadline = mono() + total
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline
        if retry is None:
            return await attempt(info, fn, args, kwargs)
        if budget is not None:
            budget.record_request()
        if retry_deadline:
            policy._retry_deadline(info)
        number, delay = 1, 0.0
        history: list[AttemptRecord] = []
        while True:
            start = mono()
            try:
                return await attempt(info, fn, args, kwargs)
            except Exception as exc:
                delay = decide(info, exc, number, delay, history, mono() - start)
            await asleep(delay)
            number += 1

    return call
