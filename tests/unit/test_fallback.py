"""Fallback values and functions, and the stale cache (fresh, stale-if-error, revalidation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from antifragile import (
    ConfigurationError,
    FakeClock,
    Fallback,
    NetworkError,
    NotFoundError,
    Policy,
    StaleCache,
    UpstreamUnavailableError,
)
from antifragile.observability import FallbackUsed, RecordingObserver


def _policy(clock: FakeClock, recorder: RecordingObserver | None = None, **kw: Any) -> Policy:
    options: dict[str, Any] = {
        "timeout": None,
        "total_timeout": None,
        "retry": None,
        "breaker": None,
        "clock": clock,
        "observer": recorder,
    }
    options.update(kw)
    return Policy("catalog", **options)


class _Script:
    """A function whose successive calls return or raise what the test scripted."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def acall(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        return self(*args)


# -- Fallback ---------------------------------------------------------------------------------


def test_fallback_needs_exactly_one_of_value_or_factory() -> None:
    """Neither or both of ``value=`` and ``factory=`` is misuse; ``None`` is a valid value."""
    with pytest.raises(ConfigurationError):
        Fallback()
    with pytest.raises(ConfigurationError):
        Fallback(value=1, factory=lambda e: 2)
    assert Fallback(value=None).produce(ValueError()) is None


def test_fallback_matches_integration_errors_by_default() -> None:
    """By default provider failures are handled and bugs are not."""
    fallback = Fallback(value=[])
    assert fallback.handles(NotFoundError("404"))
    assert fallback.handles(NetworkError("reset"))
    assert not fallback.handles(ValueError("bug"))
    assert fallback.source == "value"


def test_fallback_on_accepts_types_tuples_and_predicates() -> None:
    """``on=`` may be a type, a tuple of types or a predicate."""
    assert Fallback(value=0, on=KeyError).handles(KeyError())
    assert Fallback(value=0, on=(KeyError, ValueError)).handles(ValueError())
    predicate = Fallback(value=0, on=lambda e: isinstance(e, NotFoundError))
    assert predicate.handles(NotFoundError("x"))
    assert not predicate.handles(NetworkError("x"))


def test_fallback_value_replaces_a_provider_failure(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """A failing call answers with the fallback value, and says so in an event."""
    policy = _policy(clock, recorder, fallback=Fallback(value="default"))
    assert policy.call(_Script(UpstreamUnavailableError("503"))) == "default"
    (event,) = recorder.of(FallbackUsed)
    assert (event.source, event.code, event.policy) == ("value", "UPSTREAM_UNAVAILABLE", "catalog")


def test_fallback_factory_receives_the_exception(clock: FakeClock) -> None:
    """The factory builds the answer from the error."""
    policy = _policy(clock, fallback=Fallback(factory=lambda e: f"degraded: {e.code}"))  # type: ignore[attr-defined]
    assert policy.call(_Script(NotFoundError("404"))) == "degraded: NOT_FOUND"


def test_fallback_lets_unmatched_exceptions_through(clock: FakeClock) -> None:
    """A bug in the called code is not hidden by a fallback."""
    bug = ZeroDivisionError()
    policy = _policy(clock, fallback=Fallback(value=0))
    with pytest.raises(ZeroDivisionError) as caught:
        policy.call(_Script(bug))
    assert caught.value is bug


async def test_async_fallback_awaits_an_async_factory(clock: FakeClock) -> None:
    """In the async runner a factory may return an awaitable."""

    async def degraded(exc: BaseException) -> str:
        await asyncio.sleep(0)
        return "from factory"

    policy = _policy(clock, fallback=Fallback(factory=degraded))
    script = _Script(NetworkError("reset"))
    assert await policy.acall(script.acall) == "from factory"
    policy = _policy(clock, fallback=Fallback(value=7))
    assert await policy.acall(script.acall) == 7


# -- StaleCache: the cache itself -------------------------------------------------------------


def test_cache_stores_and_reports_age(clock: FakeClock) -> None:
    """An entry is found with its age on the injected clock."""
    cache = StaleCache(10, clock=clock)
    assert cache.lookup("k") is None
    cache.store("k", 1)
    clock.advance(4.0)
    assert cache.lookup("k") == (1, 4.0)


def test_cache_evicts_the_least_recently_used(clock: FakeClock) -> None:
    """Beyond ``max_entries`` the entry used least recently goes."""
    cache = StaleCache(10, max_entries=2, clock=clock)
    cache.store("a", 1)
    cache.store("b", 2)
    cache.lookup("a")
    cache.store("c", 3)
    assert cache.lookup("b") is None
    assert cache.lookup("a") is not None
    assert cache.lookup("c") is not None


def test_cache_invalidation(clock: FakeClock) -> None:
    """One entry or every entry can be forgotten."""
    cache = StaleCache(10, clock=clock)
    cache.store("a", 1)
    cache.store("b", 2)
    cache.invalidate("a")
    assert cache.lookup("a") is None
    cache.invalidate()
    assert cache.lookup("b") is None


def test_cache_key_is_made_of_the_arguments(clock: FakeClock) -> None:
    """Calls with different arguments are cached apart; keyword order does not matter."""
    cache = StaleCache(60, clock=clock)
    assert cache.key((1,), {"a": 1, "b": 2}) == cache.key((1,), {"b": 2, "a": 1})
    assert cache.key((1,), {}) != cache.key((2,), {})


@pytest.mark.parametrize(
    "make",
    [
        lambda: StaleCache(-1),
        lambda: StaleCache(1, stale_if_error=-1),
        lambda: StaleCache(1, stale_while_revalidate=-1),
        lambda: StaleCache(1, max_entries=0),
    ],
)
def test_invalid_caches_are_rejected(make: Callable[[], StaleCache]) -> None:
    """Negative durations and an empty cache are misuse."""
    with pytest.raises(ConfigurationError):
        make()


# -- StaleCache through a policy --------------------------------------------------------------


def test_fresh_entries_are_served_without_calling(clock: FakeClock) -> None:
    """Within ``ttl`` the cached value answers and the provider is not called."""
    script = _Script("v1", "v2")
    policy = _policy(clock, cache=StaleCache(10, clock=clock))
    assert policy.call(script, "sku-1") == "v1"
    clock.advance(9.0)
    assert policy.call(script, "sku-1") == "v1"
    assert len(script.calls) == 1
    clock.advance(1.0)
    assert policy.call(script, "sku-1") == "v2"
    assert policy.call(script, "sku-2") == "v2"
    assert len(script.calls) == 3


def test_stale_value_is_served_when_the_call_fails(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """Past ``ttl`` but within ``stale_if_error``, a failure is answered with the old value."""
    script = _Script("v1", UpstreamUnavailableError("503"))
    policy = _policy(clock, recorder, cache=StaleCache(10, stale_if_error=100, clock=clock))
    assert policy.call(script, "k") == "v1"
    clock.advance(50.0)
    assert policy.call(script, "k") == "v1"
    (event,) = recorder.of(FallbackUsed)
    assert (event.source, event.code, event.age) == ("stale", "UPSTREAM_UNAVAILABLE", 50.0)


def test_too_stale_a_value_is_not_served(clock: FakeClock) -> None:
    """Beyond ``ttl + stale_if_error`` the failure reaches the caller."""
    error = UpstreamUnavailableError("503")
    script = _Script("v1", error)
    policy = _policy(clock, cache=StaleCache(10, stale_if_error=100, clock=clock))
    policy.call(script, "k")
    clock.advance(110.5)
    with pytest.raises(UpstreamUnavailableError) as caught:
        policy.call(script, "k")
    assert caught.value is error


def test_stale_value_does_not_hide_a_bug(clock: FakeClock) -> None:
    """An unknown exception (not a provider failure) is raised even with a stale value there."""
    script = _Script("v1", KeyError("bug"))
    policy = _policy(clock, cache=StaleCache(10, clock=clock))
    policy.call(script, "k")
    clock.advance(11.0)
    with pytest.raises(KeyError):
        policy.call(script, "k")


async def test_async_stale_if_error(clock: FakeClock) -> None:
    """The async runner serves a stale value on failure too."""
    script = _Script("v1", NetworkError("reset"))
    policy = _policy(clock, cache=StaleCache(10, stale_if_error=100, clock=clock))
    assert await policy.acall(script.acall, "k") == "v1"
    clock.advance(20.0)
    assert await policy.acall(script.acall, "k") == "v1"
    assert len(script.calls) == 2


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """In the revalidation window the stale value answers and one background call refreshes."""
    cache = StaleCache(10, stale_while_revalidate=30, clock=clock)
    script = _Script("v1", "v2")
    policy = _policy(clock, recorder, cache=cache)
    assert await policy.acall(script.acall, "k") == "v1"
    clock.advance(15.0)
    first, second = await asyncio.gather(
        policy.acall(script.acall, "k"), policy.acall(script.acall, "k")
    )
    assert (first, second) == ("v1", "v1")
    await _settle()
    assert len(script.calls) == 2  # one refresh for both callers
    assert cache.refreshing == set()
    assert await policy.acall(script.acall, "k") == "v2"
    assert [e.source for e in recorder.of(FallbackUsed)] == ["stale", "stale"]


async def test_failed_revalidation_keeps_the_stale_value(clock: FakeClock) -> None:
    """A background refresh that fails leaves the old value; the next caller tries again."""
    cache = StaleCache(10, stale_while_revalidate=30, clock=clock)
    script = _Script("v1", NetworkError("reset"), "v3")
    policy = _policy(clock, cache=cache)
    await policy.acall(script.acall, "k")
    clock.advance(15.0)
    assert await policy.acall(script.acall, "k") == "v1"
    await _settle()
    assert cache.lookup(("k",)) == ("v1", 15.0)
    assert await policy.acall(script.acall, "k") == "v1"
    await _settle()
    assert cache.lookup(("k",)) == ("v3", 0.0)


def test_stale_while_revalidate_is_async_only(clock: FakeClock) -> None:
    """The sync runner calls through in the revalidation window (it has no background)."""
    script = _Script("v1", "v2")
    policy = _policy(clock, cache=StaleCache(10, stale_while_revalidate=30, clock=clock))
    policy.call(script, "k")
    clock.advance(15.0)
    assert policy.call(script, "k") == "v2"


def test_fallback_outside_the_cache_answers_when_nothing_is_cached(clock: FakeClock) -> None:
    """With both configured, a cold cache and a failing call fall through to the fallback."""
    policy = _policy(clock, cache=StaleCache(10, clock=clock), fallback=Fallback(value="default"))
    assert policy.call(_Script(UpstreamUnavailableError("503")), "k") == "default"
