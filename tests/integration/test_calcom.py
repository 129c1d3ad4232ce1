"""CalComConnector against the sandbox's Cal.com simulator, over real HTTP.

Policies run on a FakeClock. Cal.com has no idempotency key: the behaviour under test is *never
book again once Cal.com may have received the request*, with reconciliation by the ``metadata``
key; the sandbox's effect record counts the bookings made, and the duplicate rate is measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    FakeClock,
    IntegrationError,
    InvalidRequestError,
    NotFoundError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import (
    Booking,
    CalComConnector,
    OutcomeUnknownError,
    booking_link,
    correlation_for,
)
from antifragile.connectors._calcom import API_KEY_ENV, BASE_URL_ENV
from antifragile.sandbox import CalComSimulator, FlakyServer, ProviderFault, ProviderSandbox
from tests.integration._faults import (
    FAULT_KINDS,
    GATEWAY_FAULTS,
    attempt_timeout,
    sent_once_or_flagged,
)

KEY = "cal_test_key"
BOOK = "POST /v2/bookings"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


Connect = Callable[..., CalComConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([CalComSimulator(api_keys=[KEY], rate_limit=100_000)]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[CalComConnector] = []

    def factory(api_key: str = KEY, **options: Any) -> CalComConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        options.setdefault("base_url", sandbox.base_url("calcom"))
        connector = CalComConnector(api_key, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def book(connector: CalComConnector, key: str = "lead/1", **overrides: Any) -> Booking:
    fields: dict[str, Any] = {
        "start": T0,
        "event_type_id": 1,
        "attendee_name": "Ada",
        "attendee_email": "ada@example.com",
        "attendee_time_zone": "Europe/London",
        "idempotency_key": key,
    }
    fields.update(overrides)
    return await connector.create_booking(**fields)


async def test_create_booking_is_201_with_version_header_and_key_in_metadata(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A booking returns Cal.com's id, uid and times; the request carries the bearer key,
    ``cal-api-version: 2024-08-13`` and the caller's key in ``metadata``."""
    booking = await book(connect(), location="https://meet.example/1")
    (effect,) = sandbox.effects("calcom")
    assert booking.uid == effect.id
    assert booking.status == "accepted"
    assert booking.start == "2026-12-01T09:00:00.000Z"
    assert booking.end == "2026-12-01T09:30:00.000Z"
    assert booking.data["metadata"] == {
        "antifragile_key": "create-booking/lead/1",
        "antifragile_ref": correlation_for("create-booking/lead/1"),
    }
    assert effect.idempotency_key == "create-booking/lead/1"
    (request,) = sandbox.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["cal-api-version"] == "2024-08-13"


async def test_booking_by_slug_and_username(sandbox: ProviderSandbox, connect: Connect) -> None:
    """An event type named by ``eventTypeSlug`` + ``username`` books like one given by id."""
    booking = await book(connect(), event_type_id=None, event_type_slug="30min", username="alice")
    assert booking.data["eventTypeId"] == 1


async def test_bad_key_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A key that is not a Cal.com key, or an unknown one, is 401 UnauthorizedException: a
    permanent AuthenticationError, tried once; the key never shows in the error."""
    for bad in ("nope", "cal_unknown"):
        with pytest.raises(AuthenticationError) as caught:
            await book(connect(bad))
        assert "UnauthorizedException" in str(caught.value)
        assert bad not in str(caught.value)
    assert len(sandbox.requests) == 2
    assert sandbox.effects("calcom") == []


async def test_validation_version_and_unknown_event_type_errors(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A bad attendee email or a missing/unknown ``cal-api-version`` is 400
    (InvalidRequestError); an unknown event type is 404 (NotFoundError); none is retried."""
    with pytest.raises(InvalidRequestError) as caught:
        await book(connect(), attendee_email="not-an-email")
    assert "BadRequestException" in str(caught.value)
    with pytest.raises(InvalidRequestError) as version:
        await book(connect(api_version="1999-01-01"))
    assert "cal-api-version" in str(version.value)
    with pytest.raises(NotFoundError):
        await book(connect(), event_type_id=99)
    assert len(sandbox.requests) == 3
    assert sandbox.effects("calcom") == []


async def test_taken_slot_is_a_conflict(sandbox: ProviderSandbox, connect: Connect) -> None:
    """A second booking of the same slot is 409 ConflictException, a permanent ConflictError:
    Cal.com's own backstop against a double booking."""
    connector = connect()
    await book(connector)
    with pytest.raises(ConflictError) as caught:
        await book(connector, key="lead/2")
    assert "ConflictException" in str(caught.value)
    assert len(sandbox.effects("calcom")) == 1


async def test_429_with_retry_after_is_waited_out_then_booked_once(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 ThrottlerException (refused, so safe to resend) is retried after its
    ``Retry-After``; one booking is made."""
    sandbox.faults("calcom", BOOK, script=[ProviderFault.rate_limited(3)])
    booking = await book(connect())
    assert 3.0 in clock.sleeps
    assert [e.id for e in sandbox.effects("calcom")] == [booking.uid]


async def test_120_per_minute_quota_with_default_headers(clock: FakeClock) -> None:
    """The simulator's limit (120 per 60 s by default) answers 429 past it, with
    ``X-RateLimit-*-Default`` headers on every answer: a RateLimitedError."""
    simulator = CalComSimulator(rate_limit=2, per=60)
    types = [t.id for t in simulator.event_types.values()]
    assert CalComSimulator().rate_limit == 120
    with ProviderSandbox([simulator]) as small:
        policy = Policy("calcom", clock=clock, retry=Retry(attempts=1))
        async with CalComConnector(
            KEY, base_url=small.base_url("calcom"), policy=policy, timeout=1.0
        ) as connector:
            await book(connector, key="a", event_type_id=types[0])
            await book(connector, key="b", start=T0 + timedelta(hours=1))
            with pytest.raises(RateLimitedError):
                await book(connector, key="c", start=T0 + timedelta(hours=2))
        first, _, last = small.requests
        assert first.status == 201
        assert last.status == 429
        assert len(small.effects("calcom")) == 2


@pytest.mark.parametrize(
    "fault",
    [ProviderFault.ambiguous("reset"), ProviderFault.ambiguous("hang")],
    ids=["reset", "hang"],
)
async def test_ambiguous_failure_is_outcome_unknown_and_never_resent(
    sandbox: ProviderSandbox, connect: Connect, fault: ProviderFault
) -> None:
    """After a failure Cal.com may have acted on (answer lost, timeout) the connector
    does not book again: one request, an OutcomeUnknownError with the metadata key."""
    sandbox.faults("calcom", BOOK, script=[fault])
    with pytest.raises(OutcomeUnknownError) as caught:
        await book(connect())
    assert caught.value.reconcile_key == "create-booking/lead/1"
    assert not caught.value.retryable
    assert len(sandbox.requests) == 1


async def test_5xx_in_calcom_error_format_is_retried_and_booked_once(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 502 carrying Cal.com's ``{"status": "error", "error": {...}}`` body says nothing was
    booked: the booking is sent again after a back-off and exactly one exists."""
    sandbox.faults("calcom", BOOK, script=[ProviderFault.error(502)])
    await book(connect())
    assert [r.status for r in sandbox.requests] == [502, 201]
    assert len(sandbox.effects("calcom")) == 1


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_is_outcome_unknown(clock: FakeClock, gateway: str) -> None:
    """A bodiless 502 or an HTML 504 is a gateway that may have lost Cal.com's answer: an
    OutcomeUnknownError with the metadata key, after one request."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with CalComConnector(KEY, base_url=server.url, clock=clock) as connector:
            with pytest.raises(OutcomeUnknownError) as caught:
                await book(connector)
        assert caught.value.reconcile_key == "create-booking/lead/1"
        assert len(server.requests) == 1


async def test_duplicate_rate_with_reconciliation_vs_blind_resend(
    sandbox: ProviderSandbox,
    connect: Connect,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Measured duplicate rate over 100 bookings under 30% ambiguous failures and 10% 5xx,
    each booking for its own slot: reconciliation by the metadata key books each exactly once;
    blindly resending after any failure is saved from double bookings only by Cal.com's slot
    check, and the caller then sees false conflicts for bookings that do exist."""
    bookings = 100
    chaos = [(0.3, ProviderFault.ambiguous()), (0.1, ProviderFault.error(503))]
    policy = Policy("calcom", clock=clock, retry=Retry(attempts=5), breaker=None, budget=None)
    connector = connect(policy=policy)

    async def reconciled(i: int) -> None:
        for _ in range(20):
            try:
                await book(connector, key=f"ours/{i}", start=T0 + timedelta(hours=i))
                return
            except OutcomeUnknownError as unknown:
                made = {e.idempotency_key for e in sandbox.effects("calcom")}
                if unknown.reconcile_key in made:  # BOOKING_CREATED carried our key
                    return

    sandbox.faults("calcom", BOOK, chaos=chaos, seed=3)
    for i in range(bookings):
        await reconciled(i)
    ours = Counter(e.idempotency_key for e in sandbox.effects("calcom"))
    assert len(ours) == bookings
    duplicates = sum(n - 1 for n in ours.values())

    sandbox.reset()
    sandbox.faults("calcom", BOOK, chaos=chaos, seed=3)
    false_conflicts = 0
    for i in range(bookings):
        for _ in range(20):
            try:
                await book(connector, key=f"blind/{i}", start=T0 + timedelta(hours=i))
                break
            except ConflictError:
                false_conflicts += 1  # our own booking, refused as someone else's
                break
            except IntegrationError:
                continue
    blind = Counter(e.idempotency_key for e in sandbox.effects("calcom"))
    blind_duplicates = sum(n - 1 for n in blind.values())
    with capsys.disabled():
        print(
            f"\ncalcom over {bookings} bookings: "
            f"reconciled duplicates {duplicates / bookings:.1%}; "
            f"blind resend duplicates {blind_duplicates / bookings:.1%}, "
            f"false conflicts {false_conflicts / bookings:.1%}"
        )
    assert duplicates == 0
    assert false_conflicts > 0


def test_booking_link_is_pure_and_prefilled() -> None:
    """``booking_link`` builds the public page URL with prefilled fields, without a call."""
    assert booking_link("30min", "alice") == "https://cal.com/alice/30min"
    link = booking_link(
        "intro call",
        "bob",
        public_url="https://book.example/",
        name="Ada Lovelace",
        email="ada@example.com",
        day=date(2026, 12, 1),
        duration=45,
        prefill={"company": "Engines"},
    )
    assert link == (
        "https://book.example/bob/intro%20call?name=Ada+Lovelace&email=ada%40example.com"
        "&date=2026-12-01&duration=45&company=Engines"
    )
    connector = CalComConnector("cal_x")
    assert connector.booking_link("30min", "alice", month="2026-12").endswith("?month=2026-12")
    with pytest.raises(ConfigurationError):
        booking_link("", "alice")


async def test_naive_or_local_start_is_refused_or_converted(connect: Connect) -> None:
    """A naive ``datetime`` start is a ConfigurationError; an aware one is sent as UTC."""
    connector = connect()
    with pytest.raises(ConfigurationError):
        await book(connector, start=datetime(2026, 12, 1, 9, 0))
    paris = timezone(timedelta(hours=1))
    booking = await book(connector, start=datetime(2026, 12, 1, 11, 0, tzinfo=paris))
    assert booking.start == "2026-12-01T10:00:00.000Z"


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_CALCOM_API_KEY`` and ``ANTIFRAGILE_CALCOM_BASE_URL`` configure the
    connector; without a key it refuses to start."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/calcom/")
    monkeypatch.setenv(API_KEY_ENV, "cal_from_env")
    assert CalComConnector().base_url == "http://127.0.0.1:9/calcom"
    monkeypatch.delenv(API_KEY_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        CalComConnector()
    assert CalComConnector("cal_x").base_url == "https://api.cal.com"


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_is_sent_once_or_flagged(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request: latency and a 429 (a refusal, safe
    to resend) end with the booking made once; after a 5xx, a reset, a hang, a malformed
    answer or an ambiguous failure the booking may exist, so it is not sent again -- a
    non-retryable OutcomeUnknownError -- and at most one exists."""
    await sent_once_or_flagged(sandbox, "calcom", BOOK, kind, lambda: book(connect()))


async def test_default_limiter_paces_bookings_before_calcom_refuses(clock: FakeClock) -> None:
    """The default policy's token bucket (2 per second, burst 10) paces bookings below
    Cal.com's 120 per minute: 40 bookings in a row, the client waits between them, the
    simulator never answers 429, and every booking is made once."""
    simulator = CalComSimulator(api_keys=[KEY], clock=clock.monotonic)
    with ProviderSandbox([simulator]) as paced:
        async with CalComConnector(
            KEY, base_url=paced.base_url("calcom"), clock=clock, timeout=1.0
        ) as connector:
            for i in range(40):
                await book(connector, key=f"paced/{i}", start=T0 + timedelta(hours=i))
        assert [r.status for r in paced.requests] == [201] * 40
        assert len(paced.effects("calcom")) == 40
        assert sum(clock.sleeps) >= 14.0  # (40 - 10 burst) / 2 per second
