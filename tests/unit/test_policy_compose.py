"""Policy only composes: an immutable policy, a chain built from the strategies' own shells in a
fixed order, and ``replace`` / ``SharedCircuitBreaker.from_config`` instead of mutation."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from antifragile import (
    Bulkhead,
    CircuitBreaker,
    ConfigurationError,
    Constant,
    FakeClock,
    Hedge,
    Policy,
    Retry,
    SharedCircuitBreaker,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.observability import AttemptFinished, RecordingObserver
from antifragile.policies import DEFAULT_ORDER, STAGES
from antifragile.stores._memory import MemoryStore


def test_a_policy_cannot_be_changed_in_place(clock: FakeClock) -> None:
    """Assigning or deleting an attribute raises, pointing at ``replace``."""
    policy = Policy("crm", clock=clock)
    with pytest.raises(AttributeError, match=r"replace\(breaker=\.\.\.\)"):
        policy.breaker = None
    with pytest.raises(AttributeError):
        del policy.timeout


def test_replace_returns_a_new_policy_sharing_what_it_keeps(clock: FakeClock) -> None:
    """``replace`` changes only what it is given; the stateful strategies it keeps are the
    same objects (a breaker keeps its state), and the original is untouched."""
    policy = Policy("crm", timeout=5.0, bulkhead=Bulkhead(3), clock=clock)
    faster = policy.replace(timeout=1.0)
    assert (faster.timeout, policy.timeout) == (1.0, 5.0)
    assert faster.breaker is policy.breaker
    assert faster.bulkhead is policy.bulkhead
    assert faster.retry is policy.retry
    assert faster.budget is policy.budget
    assert faster.name == "crm"
    assert faster.clock is clock
    assert policy.replace(breaker=None).breaker is None
    assert policy.breaker is not None


def test_replace_shares_the_observers(clock: FakeClock) -> None:
    """An observer added to the new policy sees the calls of both (one set of observers)."""
    recorder = RecordingObserver()
    policy = Policy("crm", retry=None, clock=clock)
    other = policy.replace(timeout=1.0)
    other.add_observer(recorder)
    policy.call(lambda: 1)
    other.call(lambda: 2)
    assert len(recorder.of(AttemptFinished)) == 2


def test_replace_with_a_new_observer_has_its_own(clock: FakeClock) -> None:
    """``replace(observer=...)`` starts a separate set of observers."""
    first, second = RecordingObserver(), RecordingObserver()
    policy = Policy("crm", retry=None, clock=clock, observer=first)
    policy.replace(observer=second).call(lambda: 1)
    assert first.events == []
    assert len(second.of(AttemptFinished)) == 1


def test_the_stage_table_covers_every_strategy_in_the_documented_order() -> None:
    """The chain is built from one typed table whose keys are the documented order."""
    assert tuple(STAGES) == DEFAULT_ORDER


def test_stages_follow_the_order_and_skip_what_is_off(clock: FakeClock) -> None:
    """Only configured strategies are in the chain, in the policy's order."""
    policy = Policy(
        "crm",
        rate=TokenBucket(10.0),
        bulkhead=Bulkhead(2),
        hedge=Hedge(0.5),
        clock=clock,
    )
    names = [name for name, _ in policy.stages()]
    assert names == [
        "rate_limit",
        "total_timeout",
        "retry",
        "hedge",
        "bulkhead",
        "breaker",
        "attempt_timeout",
    ]
    assert repr(policy) == f"Policy('crm', {' -> '.join(names)})"
    assert [n for n, _ in policy.replace(retry=None, hedge=None).stages()] == [
        "rate_limit",
        "total_timeout",
        "bulkhead",
        "breaker",
        "attempt_timeout",
    ]


def test_every_stage_owns_both_shells(clock: FakeClock) -> None:
    """Each strategy's object (or timeout stage) provides ``wrap_sync`` and ``wrap_async``."""
    policy = Policy("crm", rate=TokenBucket(10.0), bulkhead=Bulkhead(2), hedge=Hedge(), clock=clock)
    for _name, stage in policy.stages():
        assert callable(stage.wrap_sync)
        assert callable(stage.wrap_async)


def test_order_puts_the_breaker_outside_the_retry(clock: FakeClock) -> None:
    """With ``order=`` the breaker sees one outcome per logical call, not per attempt."""
    breaker = CircuitBreaker("crm", minimum_calls=1, failure_rate=1.0, window=10, clock=clock)
    policy = Policy(
        "crm",
        retry=Retry(attempts=3, backoff=Constant(0.1)),
        breaker=breaker,
        order=("breaker", "retry"),
        clock=clock,
    )
    outcomes = iter([UpstreamUnavailableError("503"), UpstreamUnavailableError("503"), "ok"])

    def flaky() -> str:
        step = next(outcomes)
        if isinstance(step, Exception):
            raise step
        return str(step)

    assert policy.call(flaky) == "ok"
    assert breaker.metrics()["calls"] == 1
    assert breaker.metrics()["failures"] == 0


def test_strategies_take_the_policy_clock_name_and_observer(clock: FakeClock) -> None:
    """A breaker built without clock, name or observer adopts the policy's; one built with its
    own keeps them."""
    recorder, own = RecordingObserver(), RecordingObserver()
    bare = CircuitBreaker()
    Policy("crm", breaker=bare, clock=clock, observer=recorder)
    assert bare.name == "crm"
    bare.force_open()
    assert recorder.events  # the transition reached the policy's observer
    mine = CircuitBreaker("mine", observer=own)
    Policy("crm", breaker=mine, clock=clock, observer=recorder)
    assert mine.name == "mine"
    mine.force_open()
    assert own.events


def test_from_config_carries_the_thresholds_over(clock: FakeClock) -> None:
    """``SharedCircuitBreaker.from_config`` takes a local breaker's thresholds."""
    local = CircuitBreaker(
        "crm",
        failure_rate=0.3,
        slow_call_duration=2.0,
        minimum_calls=7,
        open_duration=12.0,
        half_open_calls=3,
    )
    shared = SharedCircuitBreaker.from_config(
        local.config, MemoryStore(clock=clock), name="crm", clock=clock
    )
    assert isinstance(shared, SharedCircuitBreaker)
    assert shared.key == "crm"
    kept = ("failure_rate", "slow_call_duration", "minimum_calls", "open_duration")
    for field in (*kept, "half_open_calls", "max_open_duration", "open_duration_multiplier"):
        assert getattr(shared.config, field) == getattr(local.config, field), field
    assert dataclasses.asdict(shared.config)["window_type"] == "time"


def test_a_shared_breaker_is_refused_in_sync_code(clock: FakeClock) -> None:
    """A sync call through a policy whose breaker lives in a store fails with a clear error."""
    store = MemoryStore(clock=clock)
    policy = Policy("crm", clock=clock).replace(
        breaker=SharedCircuitBreaker("crm", store, clock=clock)
    )
    with pytest.raises(ConfigurationError, match="needs async"):
        policy.call(lambda: 1)


def test_a_shared_breaker_runs_its_own_async_shell(clock: FakeClock) -> None:
    """Through ``replace``, a policy gets a shared breaker whose async shell records the
    calls (the closed fast path counts successes without I/O)."""

    async def main() -> None:
        store = MemoryStore(clock=clock)
        await store.open()
        policy = Policy("crm", retry=None, clock=clock)
        assert policy.breaker is not None
        shared = SharedCircuitBreaker.from_config(
            policy.breaker.config, store, name="crm", clock=clock
        )
        policy = policy.replace(breaker=shared)

        async def ok() -> int:
            return 1

        assert await policy.acall(ok) == 1
        assert shared.state.value == "closed"
        await store.close()

    asyncio.run(main())
