"""The jobs API: declaring jobs, validating payloads at enqueue, enqueue options, and the pure
failure decisions a worker takes (retry, defer, dead)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from antifragile import (
    CircuitOpenError,
    ConfigurationError,
    Constant,
    Exponential,
    FakeClock,
    InvalidRequestError,
    NetworkError,
    RateLimitedError,
    Retry,
    RetryBudgetExhaustedError,
    UpstreamUnavailableError,
)
from antifragile.jobs import (
    DEFAULT_JOB_RETRY,
    Job,
    JobContext,
    JobFilter,
    Jobs,
    JobState,
    StatusFlag,
)
from antifragile.jobs._payload import PayloadCodec, looks_secret, redact_payload
from antifragile.jobs._policy import (
    PROBE_WAIT,
    decide_failure,
    describe_error,
    is_local_rate_limit,
    job_retry_on,
)
from antifragile.jobs._view import job_view


@pytest.fixture
async def jobs(clock: FakeClock) -> AsyncIterator[Jobs]:
    """Jobs on the in-memory queue (the same contract as the database queues)."""
    app = Jobs(database_url="memory://", clock=clock)
    async with app:
        yield app


# -- declaring ----------------------------------------------------------------------------------


def test_decorator_registers_with_defaults() -> None:
    """@jobs.job (bare) registers under the function's name with the documented defaults."""
    jobs = Jobs(database_url="sqlite:///unused.db")

    @jobs.job
    async def ping(ctx: JobContext) -> str:
        return "pong"

    assert jobs.registry == {"ping": ping}
    assert ping.name == "ping"
    assert ping.queue == "default"
    assert ping.retry is DEFAULT_JOB_RETRY
    assert ping.timeout == 300.0
    assert ping.priority == 0
    assert ping.provider is None
    assert ping.payload_version == 1


def test_decorator_options_are_kept() -> None:
    """Name, queue, retry, timeout, priority, provider and payload version are the job's."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    retry = Retry(attempts=8)

    @jobs.job(
        "summary",
        queue="email",
        retry=retry,
        timeout=20,
        priority=5,
        provider="resend",
        payload_version=2,
    )
    async def send_summary(ctx: JobContext, session_id: str) -> None:
        pass

    assert jobs.registry["summary"] is send_summary
    assert (send_summary.queue, send_summary.retry, send_summary.timeout) == ("email", retry, 20)
    assert (send_summary.priority, send_summary.provider) == (5, "resend")
    assert send_summary.payload_version == 2


def test_misdeclared_jobs_are_refused() -> None:
    """A duplicate name, a sync function, *args/**kwargs and a bad timeout are refused at once."""
    jobs = Jobs(database_url="sqlite:///unused.db")

    @jobs.job
    async def once(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="already declared"):

        @jobs.job("once")
        async def again(ctx: JobContext) -> None:
            pass

    def sync(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="async def"):
        jobs.job(sync)  # type: ignore[arg-type]

    async def variadic(ctx: JobContext, *args: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"\*args"):
        jobs.job(variadic)

    async def slow(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="timeout"):
        jobs.job("slow", timeout=0)(slow)


@pytest.mark.parametrize(
    "field", ["token", "api_key", "password", "client_secret", "authorization", "apiKey"]
)
def test_secret_looking_parameters_are_refused_at_declaration(field: str) -> None:
    """A payload parameter named like a credential is refused, and the error names it."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    namespace: dict[str, Any] = {"JobContext": JobContext}
    exec(f"async def leak(ctx, {field}: str) -> None:\n    pass\n", namespace)
    with pytest.raises(ConfigurationError, match=field):
        jobs.job(namespace["leak"])


def test_secret_names_are_recognised_without_false_alarms() -> None:
    """Credential names are caught in any case style; ordinary names are left alone."""
    for name in ("access_token", "refreshToken", "API_KEY", "x-api-key", "private_key", "passwd"):
        assert looks_secret(name), name
    for name in ("idempotency_key", "max_tokens", "key_id", "session_id", "tokenizer", "email"):
        assert not looks_secret(name), name


# -- payload validation at enqueue --------------------------------------------------------------


async def test_invalid_payloads_fail_at_enqueue_and_nothing_is_stored(jobs: Jobs) -> None:
    """A wrong type, a missing or an unknown argument raise ConfigurationError in the caller,
    naming the field, and no job is written."""

    @jobs.job
    async def charge(ctx: JobContext, order_id: int, amount: float, note: str = "") -> None:
        pass

    with pytest.raises(ConfigurationError, match="order_id"):
        await charge.enqueue("not-a-number", 10.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="amount"):
        await charge.enqueue(1)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="surprise"):
        await charge.enqueue(1, 2.0, surprise=True)  # type: ignore[call-arg]
    assert await jobs.find(JobFilter()) == []


async def test_unserialisable_payloads_fail_at_enqueue(jobs: Jobs) -> None:
    """Values that JSON cannot hold (an arbitrary object, NaN) are refused at enqueue."""

    @jobs.job
    async def store(ctx: JobContext, value: Any) -> None:
        pass

    with pytest.raises(ConfigurationError, match="JSON"):
        await store.enqueue(object())
    with pytest.raises(ConfigurationError, match="JSON"):
        await store.enqueue(math.nan)


async def test_nested_secret_fields_are_refused_without_echoing_the_value(jobs: Jobs) -> None:
    """A secret-looking key anywhere in the payload is refused; the message names its path and
    never contains the secret."""

    @jobs.job
    async def call(ctx: JobContext, request: dict[str, Any]) -> None:
        pass

    with pytest.raises(ConfigurationError) as info:
        await call.enqueue({"headers": {"Authorization": "Bearer s3cr3t-value-123"}})
    assert "headers.Authorization" in str(info.value)
    assert "s3cr3t" not in str(info.value)


async def test_payload_is_validated_encoded_and_revived(jobs: Jobs) -> None:
    """The payload is stored as JSON (a datetime as ISO text, defaults filled in) and the job
    function receives typed values again."""
    seen: list[tuple[datetime, int]] = []

    @jobs.job
    async def remind(ctx: JobContext, at: datetime, times: int = 2) -> str:
        seen.append((at, times))
        return f"{ctx.attempt}:{ctx.idempotency_key.startswith('job:')}"

    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    enqueued = await remind.enqueue(at)
    stored = await jobs.get(enqueued.id)
    assert stored is not None
    assert stored.payload == {"at": "2030-01-02T03:04:05Z", "times": 2}
    assert await remind.run_inline(at, times=3) == "1:True"
    assert seen == [(at, 3)]


async def test_positional_only_parameters_round_trip(jobs: Jobs) -> None:
    """Positional-only payload parameters are passed back positionally."""

    @jobs.job
    async def add(ctx: JobContext, a: int, /, b: int) -> int:
        return a + b

    assert await add.run_inline(2, b=3) == 5


# -- enqueue options ----------------------------------------------------------------------------


async def test_idempotency_key_creates_one_job(jobs: Jobs) -> None:
    """Enqueueing twice with the same idempotency key creates one job; the second call names it."""

    @jobs.job
    async def welcome(ctx: JobContext, email: str) -> None:
        pass

    first = await welcome.configure(idempotency_key="welcome:1").enqueue("a@example.com")
    second = await welcome.configure(idempotency_key="welcome:1").enqueue("a@example.com")
    assert first.created
    assert not second.created
    assert second.id == first.id
    assert len(await jobs.find(JobFilter())) == 1
    job = await jobs.get(first.id)
    assert job is not None
    assert job.idempotency_key == "welcome:1"


async def test_delay_run_at_priority_and_queue(jobs: Jobs, clock: FakeClock) -> None:
    """delay and run_at schedule the job; priority and queue override the declaration."""

    @jobs.job(queue="email")
    async def note(ctx: JobContext, n: int) -> None:
        pass

    now = clock.time()
    later = await note.configure(delay=timedelta(minutes=5)).enqueue(1)
    at = await note.configure(run_at=datetime.fromtimestamp(now + 3600, UTC)).enqueue(2)
    urgent = await note.configure(priority=9, queue="urgent").enqueue(3)
    jobs_by_id = {j.id: j for j in await jobs.find(JobFilter())}
    assert jobs_by_id[later.id].run_at == pytest.approx(now + 300)
    assert jobs_by_id[later.id].state is JobState.SCHEDULED
    assert jobs_by_id[at.id].run_at == pytest.approx(now + 3600)
    assert jobs_by_id[urgent.id].state is JobState.QUEUED
    assert (jobs_by_id[urgent.id].priority, jobs_by_id[urgent.id].queue) == (9, "urgent")
    with pytest.raises(ConfigurationError, match="either delay or run_at"):
        note.configure(delay=1, run_at=now)
    with pytest.raises(ConfigurationError, match="timezone"):
        note.configure(run_at=datetime(2030, 1, 1))


async def test_ordering_key_runs_a_keys_jobs_one_at_a_time_in_order(jobs: Jobs) -> None:
    """Jobs enqueued with one ordering key run in enqueue order, one at a time, even on a
    worker with room for all of them; the job's view shows its key; an empty key or one with a
    NUL is refused."""
    ran: list[int] = []
    running: set[str] = set()

    @jobs.job
    async def step(ctx: JobContext, key: str, n: int) -> None:
        assert key not in running
        running.add(key)
        await asyncio.sleep(0)
        ran.append(n)
        running.discard(key)

    for n in range(5):
        enqueued = await step.configure(ordering_key="order-7").enqueue("order-7", n)
    job = await jobs.get(enqueued.id)
    assert job is not None
    assert job.ordering_key == "order-7"
    assert job_view(job)["ordering_key"] == "order-7"  # as the CLI and the admin API show it
    await jobs.worker(concurrency=10).run_until_idle()
    assert ran == [0, 1, 2, 3, 4]
    for bad in ("", "a\x00b"):
        with pytest.raises(ConfigurationError, match="ordering_key"):
            step.configure(ordering_key=bad)


async def test_status_flag_is_pending_after_enqueue(jobs: Jobs, clock: FakeClock) -> None:
    """A status flag given at enqueue is set to its pending value in the same transaction."""

    @jobs.job
    async def email(ctx: JobContext) -> None:
        pass

    flag = StatusFlag("session:42", "summary_email")
    enqueued = await email.configure(status=flag).enqueue()
    job = await jobs.get(enqueued.id)
    assert job is not None
    assert job.status_flag == flag
    entry = await jobs.queue.store.kv.get("session:42", now=clock.time())
    assert entry is not None
    assert entry.value == {"summary_email": "pending"}


async def test_prepare_and_enqueue_many(jobs: Jobs) -> None:
    """prepare() validates without enqueueing; enqueue_many writes a batch in one call."""

    @jobs.job
    async def tick(ctx: JobContext, n: int) -> None:
        pass

    batch = [tick.prepare(n) for n in range(20)]
    assert await jobs.find(JobFilter()) == []
    results = await jobs.enqueue_many(batch)
    assert len(results) == 20
    assert all(r.created for r in results)
    with pytest.raises(ConfigurationError):
        tick.prepare("x")  # type: ignore[arg-type]


async def test_payload_upgrades_run_in_order(jobs: Jobs) -> None:
    """A payload stored at an older version is upgraded step by step before the job runs; a
    missing step is a ConfigurationError."""

    @jobs.job(payload_version=3)
    async def greet(ctx: JobContext, full_name: str, lang: str) -> str:
        return f"{lang}:{full_name}"

    @greet.upgrade(1)
    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"full_name": payload.pop("name")}

    @greet.upgrade(2)
    def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "lang": "en"}

    old = _job(payload={"name": "Ada"}, payload_version=1, name="greet")
    args, kwargs = greet.decode(old)
    assert await greet(JobContext(job=old, jobs=jobs), *args, **kwargs) == "en:Ada"

    @jobs.job(payload_version=2)
    async def orphan(ctx: JobContext, x: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match="no upgrade"):
        orphan.decode(_job(payload={"x": 1}, payload_version=1, name="orphan"))


def test_queue_use_before_open_and_both_sources_are_errors() -> None:
    """A Jobs given both a queue and a URL is refused; its queue is not there before open()."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match="not open"):
        _ = jobs.queue
    with pytest.raises(ConfigurationError, match="not both"):
        Jobs(jobs.queue if jobs.is_open else object(), database_url="sqlite:///x.db")  # type: ignore[arg-type]


def test_context_idempotency_key_prefers_the_jobs_own() -> None:
    """ctx.idempotency_key is the job's idempotency key, else job:<id>."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    keyed = _job(idempotency_key="order-7")
    assert JobContext(job=keyed, jobs=jobs).idempotency_key == "order-7"
    bare = _job()
    assert JobContext(job=bare, jobs=jobs).idempotency_key == f"job:{bare.id}"
    assert JobContext(job=_job(attempts=2), jobs=jobs).attempt == 3


def test_redact_payload_hides_secret_keys_and_values() -> None:
    """Payloads shown to operators lose secret-looking keys' values and credentials in text."""
    shown = redact_payload(
        {"note": "call with Bearer abcdefghijkl", "nested": [{"api_key": "k-123"}], "n": 3}
    )
    assert shown == {
        "note": "call with Bearer [REDACTED]",
        "nested": [{"api_key": "[REDACTED]"}],
        "n": 3,
    }


# -- failure decisions (pure) -------------------------------------------------------------------


def _decide(exc: BaseException, retry: Retry = DEFAULT_JOB_RETRY, attempt: int = 1, **kw: Any):  # type: ignore[no-untyped-def]
    return decide_failure(
        retry,
        exc,
        attempt=attempt,
        max_attempts=kw.pop("max_attempts", retry.attempts),
        now=1000.0,
        created_at=kw.pop("created_at", 1000.0),
        rng=random.Random(1),
        **kw,
    )


def test_open_breaker_defers_until_it_half_opens() -> None:
    """CircuitOpenError defers the job to the breaker's half-open time: no attempt counted;
    without an ``until`` (half-open, its probe out) it waits only for the probe's outcome."""
    decision = _decide(CircuitOpenError("open", until=1060.0), attempt=12)
    assert (decision.kind, decision.run_at) == ("defer", 1060.0)
    probing = _decide(CircuitOpenError("half-open"), attempt=12)
    assert (probing.kind, probing.run_at) == ("defer", 1000.0 + PROBE_WAIT)
    assert _decide(CircuitOpenError("half-open"), probe_wait=0.25).run_at == 1000.25


def test_a_local_rate_limit_defers_and_a_providers_429_counts() -> None:
    """The local limiter refusing a token (``local=True``: nothing was sent) defers the job to
    when the token is there, without an attempt, even on its last one; a provider's 429 is an
    answer: a retry that counts, as before."""
    local = RateLimitedError("no token within max_wait", retry_after=12.5, local=True)
    assert is_local_rate_limit(local)
    waited = _decide(local, attempt=12)
    assert (waited.kind, waited.run_at, waited.delay) == ("defer", 1012.5, 12.5)
    provider = RateLimitedError("HTTP 429", retry_after=3.0, status=429)
    assert not is_local_rate_limit(provider)
    assert (_decide(provider).kind, _decide(provider, attempt=12).kind) == ("retry", "dead")


def test_permanent_errors_and_exhausted_attempts_are_dead() -> None:
    """A permanent error is dead at once; a retryable one after the last attempt."""
    assert _decide(InvalidRequestError("bad", status=422)).reason == "not_retryable"
    last = _decide(NetworkError("reset"), attempt=12)
    assert (last.kind, last.reason) == ("dead", "attempts_exhausted")


def test_retry_after_becomes_the_next_run_time() -> None:
    """A provider's Retry-After is the delay; beyond max_retry_after the job is dead."""
    decision = _decide(RateLimitedError("slow down", retry_after=120.0))
    assert (decision.kind, decision.run_at, decision.from_retry_after) == ("retry", 1120.0, True)
    capped = Retry(attempts=5, max_retry_after=60)
    too_long = _decide(RateLimitedError("slow down", retry_after=120.0), retry=capped)
    assert (too_long.kind, too_long.reason) == ("dead", "retry_after_beyond_deadline")
    ignoring = Retry(attempts=5, backoff=Constant(7), respect_retry_after=False)
    assert _decide(RateLimitedError("x", retry_after=120.0), retry=ignoring).delay == 7


def test_default_predicate_reads_as_the_job_predicate() -> None:
    """Retry()'s default retry_on means, in a job: retry unknown exceptions and local
    rejections; a custom retry_on is obeyed as given."""
    plain = Retry(attempts=3, backoff=Constant(1))
    assert _decide(KeyError("bug"), retry=plain).kind == "retry"
    assert _decide(RetryBudgetExhaustedError("budget"), retry=plain).kind == "retry"
    strict = Retry(attempts=3, retry_on=UpstreamUnavailableError)
    assert _decide(KeyError("bug"), retry=strict).reason == "not_retryable"
    assert job_retry_on(ConfigurationError("misuse")) is False
    assert job_retry_on(TimeoutError()) is True


def test_deadline_counts_from_creation() -> None:
    """A retry that would run past the policy's deadline (from the job's creation) is dead."""
    retry = Retry(attempts=10, backoff=Constant(100), deadline=150)
    assert _decide(NetworkError("x"), retry=retry, created_at=1000.0).kind == "retry"
    assert _decide(NetworkError("x"), retry=retry, created_at=900.0).reason == "deadline"


def test_default_schedule_grows_to_its_cap() -> None:
    """The default job schedule: 12 attempts, ceilings from 15 s doubling, capped at 6 h."""
    backoff = DEFAULT_JOB_RETRY.backoff
    assert isinstance(backoff, Exponential)
    ceilings = [backoff.ceiling(n) for n in range(1, 12)]
    assert ceilings[:3] == [15.0, 30.0, 60.0]
    assert ceilings[-1] == 15360.0
    assert backoff.ceiling(20) == 6 * 3600
    assert sum(ceilings) == pytest.approx(30705.0)
    assert DEFAULT_JOB_RETRY.attempts == 12


def test_error_descriptions_are_redacted() -> None:
    """The code, status and message kept for an attempt never carry a credential."""
    info = describe_error(ValueError("failed: https://x.test/?api_key=sk_live_abcdef123456"))
    assert (info.code, info.status) == ("INTERNAL", None)
    assert "sk_live" not in info.message
    assert "[REDACTED]" in info.message
    upstream = describe_error(UpstreamUnavailableError("HTTP 503", status=503, provider="p"))
    assert (upstream.code, upstream.status, upstream.retryable) == (
        "UPSTREAM_UNAVAILABLE",
        503,
        True,
    )


def _job(
    *,
    payload: Any = None,
    payload_version: int = 1,
    name: str = "j",
    idempotency_key: str | None = None,
    attempts: int = 0,
) -> Job:
    return Job(
        id="0" * 32,
        name=name,
        queue="default",
        state=JobState.RUNNING,
        priority=0,
        payload=payload,
        payload_version=payload_version,
        idempotency_key=idempotency_key,
        attempts=attempts,
        max_attempts=3,
        run_at=0.0,
        created_at=0.0,
        updated_at=0.0,
    )


def _quick_and_validating(job: Callable[..., Any]) -> tuple[PayloadCodec, PayloadCodec]:
    """Two codecs of *job*'s payload: one as a job function gets it, and one held to the
    validating path (no quick path for scalars)."""
    codec = PayloadCodec(job, "quick")
    slow = PayloadCodec(job, "slow")
    slow._build()
    slow._scalars = None  # force the validating path
    return codec, slow


def test_scalar_payloads_take_the_quick_path_with_the_same_result() -> None:
    """Arguments of exactly their parameter's scalar type are stored as given (no validation
    pass), and give the same payload the validating path gives; anything else -- a coercion, a
    keyword-only argument passed by position, a non-finite float, a missing or unknown
    argument -- takes the validating path and its errors."""

    async def job(
        ctx: JobContext, name: str, count: int, ratio: float, on: bool, *, tag: str
    ) -> None:
        return None

    codec, slow = _quick_and_validating(job)
    rng = random.Random(7)
    for _ in range(200):
        drawn = (
            "n" * rng.randint(0, 3),
            rng.randint(-5, 5),
            rng.uniform(-1, 1),
            rng.random() < 0.5,
        )
        assert codec.encode(drawn, {"tag": "t"}) == slow.encode(drawn, {"tag": "t"})
    assert codec._scalars is not None
    assert codec.encode(("a", "3", 1.0, True), {"tag": "t"})["count"] == 3  # coerced (slow)
    bad: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("a", 1, math.nan, True), {"tag": "t"}),
        (("a", 1, 1.0, True, "t"), {}),
        (("a", 1, 1.0), {"tag": "t"}),
        (("a", 1, 1.0, True), {"tag": "t", "extra": 1}),
    ]
    for args, kwargs in bad:
        with pytest.raises(ConfigurationError):
            codec.encode(args, kwargs)


def test_unannotated_parameters_take_the_quick_path_for_plain_scalars() -> None:
    """An unannotated parameter (``Any``) stores a str, int, bool or finite float as given,
    the payload the validating path gives; other values (a list, a non-finite float) take the
    validating path, and personal data in a string is pseudonymised on either path."""

    async def job(ctx, n, sent):  # type: ignore[no-untyped-def]
        return None

    codec, slow = _quick_and_validating(job)
    assert codec._scalars is not None
    rng = random.Random(11)
    for _ in range(200):
        drawn = (
            rng.choice([rng.randint(-9, 9), "x" * rng.randint(0, 2), rng.random() < 0.5]),
            rng.uniform(-1e9, 1e9),
        )
        quick = codec.encode(drawn, {})
        assert quick == slow.encode(drawn, {})
        assert [type(v) for v in quick.values()] == [type(v) for v in drawn]
    assert codec.encode(([1, "a"], 2.5), {}) == {"n": [1, "a"], "sent": 2.5}
    assert codec.encode(("ada@example.com", 1), {})["n"].startswith("pii_")
    with pytest.raises(ConfigurationError):
        codec.encode((1, math.inf), {})


def test_stored_scalar_payloads_decode_on_the_quick_path_with_the_same_arguments() -> None:
    """A stored payload holding exactly the parameters, each of exactly its scalar type, gives
    the arguments validation gives (same values, same types, positional-only ones by
    position); any other payload -- a value to coerce, a missing or unknown field -- takes the
    validating path and its coercions and errors."""

    async def job(
        ctx: JobContext, name: str, /, count: int, ratio: float, on: bool, tag: Any
    ) -> None:
        return None

    codec, slow = _quick_and_validating(job)
    assert codec._scalars is not None
    rng = random.Random(5)
    for _ in range(200):
        payload = {
            "name": "n" * rng.randint(0, 3),
            "count": rng.randint(-(2**70), 2**70),
            "ratio": rng.uniform(-1e9, 1e9),
            "on": rng.random() < 0.5,
            "tag": rng.choice([1, "x", True, 2.5]),
        }
        quick = codec.decode(payload)
        assert quick == slow.decode(payload)
        assert [type(v) for v in quick[0]] == [str]
        assert [type(v) for v in quick[1].values()] == [
            type(payload[k]) for k in ("count", "ratio", "on", "tag")
        ]
    base = {"name": "a", "count": 1, "ratio": 1.5, "on": True, "tag": None}
    coerced = {**base, "count": "3", "ratio": 2}
    args, kwargs = codec.decode(coerced)
    assert (args, kwargs) == slow.decode(coerced)
    assert (kwargs["count"], type(kwargs["ratio"])) == (3, float)
    listed = {**base, "tag": [1]}
    expected = (("a",), {"count": 1, "ratio": 1.5, "on": True, "tag": [1]})
    assert codec.decode(listed) == slow.decode(listed) == expected
    for wrong in ({k: v for k, v in base.items() if k != "on"}, {**base, "extra": 1}):
        with pytest.raises(ConfigurationError):
            codec.decode(wrong)


def test_jobs_built_from_stored_values_are_the_jobs_the_dataclass_makes() -> None:
    """``build_job`` (how the queues turn claimed rows into jobs) makes the very Job that
    ``Job(*values)`` makes: equal, frozen, every field set; a wrong number of
    values is refused."""
    import dataclasses

    from antifragile.jobs._model import build_job

    values = (
        "0" * 32, "send", "default", JobState.RUNNING, 3, {"n": 1}, 2, "key", 1, 5,
        1.5, 1.0, 2.0, "hubspot", 30.0, "w", 40.0, 1.2, 1.3, "TIMEOUT", "slow",
        ({"number": 1, "code": "TIMEOUT"},), {"ok": True}, None,
        StatusFlag("k", "f"), {"step": 2}, {"request_id": "r"}, "order", 7,
    )  # fmt: skip
    built = build_job(*values)
    made = Job(*values)
    assert built == made
    assert dataclasses.astuple(built) == dataclasses.astuple(made)
    assert type(built) is Job
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.state = JobState.SUCCEEDED  # type: ignore[misc]
    with pytest.raises(ValueError):
        build_job(*values[:-1])


def test_the_sqlite_queues_json_reader_reads_as_json_loads_does() -> None:
    """The SQLite queue's reader of stored JSON gives what ``json.loads`` gives -- the same
    values, and the same errors for text that is not one JSON value -- whatever surrounds the
    value."""
    import json

    from antifragile.jobs._sqlite import _loads

    texts = [
        '{"n": 1, "sent": 1765140000.5}',
        '{"a": [1, 2.5, "x", null, true]}',
        " {} ",
        "[]\n",
        '"text"',
        "0",
        '{"a": NaN}',
    ]
    for text in texts:
        assert repr(_loads(text)) == repr(json.loads(text))
    for bad in ["", "{", '{"a": 1} x', "\ufeff{}", "[1] [2]"]:
        with pytest.raises(ValueError) as ours:
            _loads(bad)
        with pytest.raises(ValueError) as theirs:
            json.loads(bad)
        assert str(ours.value) == str(theirs.value)


def test_job_ids_increase_in_the_order_they_are_made() -> None:
    """Ids made within one millisecond keep their order (jobs of equal priority and due time
    are claimed by id), and so do ids made from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from antifragile.jobs import new_job_id

    made = [new_job_id() for _ in range(5_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_job_id() for _ in range(2_000)], range(4)))
    for batch in batches:
        assert batch == sorted(batch)
    assert len({i for batch in batches for i in batch}) == 8_000


def test_job_ids_keep_increasing_when_the_system_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from antifragile.jobs import _model, new_job_id

    before = new_job_id()
    now = [float(int(before[:12], 16)) / 1000 - 3600.0]  # an hour back (an NTP step)
    monkeypatch.setattr(_model, "_wall", lambda: now[0])
    after = [new_job_id() for _ in range(3)]
    assert [before, *after] == sorted([before, *after])
    assert after[0][:12] == before[:12]  # the same millisecond, one more
    assert int(after[0], 16) == int(before, 16) + 1
