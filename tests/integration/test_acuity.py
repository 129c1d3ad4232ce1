"""AcuityConnector against the sandbox's Acuity simulator, over real HTTP.

Policies run on a FakeClock. Acuity has no idempotency key: the behaviour under test is *an
appointment exists once per key whatever the fault*, settled after an ambiguous failure by
looking it up by email and time; the sandbox's effect record counts the appointments made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    IntegrationError,
    InvalidRequestError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import AcuityConnector, Appointment, OutcomeUnknownError
from antifragile.connectors._acuity import API_KEY_ENV, BASE_URL_ENV, USER_ID_ENV
from antifragile.sandbox import AcuitySimulator, FlakyServer, ProviderFault, ProviderSandbox
from tests.integration._faults import FAULT_KINDS, GATEWAY_FAULTS
from tests.integration.test_sandbox_status_webhooks import Receiver

USER, KEY = "4242", "acuity-test-key"
BOOK = "POST /appointments"
WHEN = "2026-12-01T09:00:00-0500"  # a Tuesday, 09:00 in New York

Connect = Callable[..., AcuityConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = AcuitySimulator(user_id=USER, api_key=KEY, rate_limit=100_000)
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[AcuityConnector] = []

    def factory(user: str = USER, key: str = KEY, **options: Any) -> AcuityConnector:
        options.setdefault("timeout", 0.3)
        options.setdefault("base_url", sandbox.base_url("acuity"))
        connector = AcuityConnector(user, key, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def book(
    connector: AcuityConnector, key: str = "lead/1", when: str = WHEN, **more: Any
) -> Appointment:
    return await connector.create_appointment(
        datetime=when,
        appointment_type_id=1,
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        idempotency_key=key,
        **more,
    )


async def test_availability_then_an_appointment(sandbox: ProviderSandbox, connect: Connect) -> None:
    """Dates and times come from ``/availability``; the booked time disappears from them;
    the request is HTTP Basic with the user id and API key."""
    connector = connect()
    days = await connector.available_dates(appointment_type_id=1, month="2026-12")
    assert days[0] == "2026-12-01"
    assert "2026-12-05" not in days
    times = await connector.available_times(appointment_type_id=1, date=days[0])
    assert times[0].time == WHEN
    assert times[0].slots_available == 1
    appointment = await book(connector, when=times[0].time)
    assert appointment.id > 0
    assert not appointment.reconciled
    assert appointment.datetime == WHEN
    after = await connector.available_times(appointment_type_id=1, date=days[0])
    assert WHEN not in [t.time for t in after]
    (effect,) = sandbox.effects("acuity", BOOK)
    assert effect.id == str(appointment.id)
    post = next(r for r in sandbox.requests if r.method == "POST")
    assert post.headers["authorization"].startswith("Basic ")


async def test_bad_credentials_are_an_authentication_error(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A wrong API key is 401 ``unauthorized``: permanent, tried once, the key never shown."""
    with pytest.raises(AuthenticationError) as caught:
        await book(connect(key="wrong-key"))
    assert "unauthorized" in str(caught.value)
    assert "wrong-key" not in str(caught.value)
    assert len(sandbox.requests) == 1


async def test_a_taken_time_is_refused_and_validation_errors_are_not_retried(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Booking a time another customer took is 400 ``not_available``; a bad email is 400;
    neither is retried and no second appointment exists. The same customer asking for the same
    time again gets the appointment that exists (looked up first)."""
    connector = connect()
    first = await book(connector)
    assert (await book(connector, key="lead/1-again")).id == first.id
    with pytest.raises(InvalidRequestError) as taken:
        await connector.create_appointment(
            datetime=WHEN,
            appointment_type_id=1,
            first_name="Grace",
            last_name="Hopper",
            email="grace@example.com",
            idempotency_key="lead/2",
        )
    assert "not_available" in str(taken.value)
    with pytest.raises(InvalidRequestError):
        await connector.create_appointment(
            datetime="2026-12-01T10:00:00-0500",
            appointment_type_id=1,
            first_name="A",
            last_name="B",
            email="not-an-email",
            idempotency_key="k",
        )
    assert len(sandbox.effects("acuity", BOOK)) == 1


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_in_one_appointment(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock, kind: str
) -> None:
    """Each fault on the first booking request: a refusal (429, 5xx in Acuity's body) is
    retried; a failure that may have booked (reset, hang, malformed, ambiguous) is settled by
    looking the appointment up -- found: returned as ``reconciled``; absent: booked again. Every
    kind ends with exactly one appointment."""
    sandbox.faults("acuity", BOOK, script=[FAULT_KINDS[kind]])
    appointment = await book(connect())
    made = sandbox.effects("acuity", BOOK)
    assert [e.id for e in made] == [str(appointment.id)]
    assert appointment.reconciled == (kind in ("ambiguous", "ambiguous_hang"))
    if kind == "429":
        assert 1.0 in clock.sleeps


async def test_look_up_refused_is_outcome_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When the answer is lost and the look-up after it is refused for good (401), the outcome
    is unknown: a non-retryable OutcomeUnknownError with the key; nothing is booked again."""
    sandbox.faults("acuity", BOOK, script=[ProviderFault.ambiguous()])
    sandbox.faults(
        "acuity", "GET /appointments", script=[ProviderFault.latency(0.0), ProviderFault.error(401)]
    )
    with pytest.raises(OutcomeUnknownError) as caught:
        await book(connect())
    assert caught.value.reconcile_key == "create-appointment/lead/1"
    assert not caught.value.retryable
    assert len(sandbox.effects("acuity", BOOK)) == 1


async def test_look_up_failing_for_now_is_retryable_and_the_retry_books_nothing_more(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When the answer is lost and the look-up fails for now (5xx until attempts run out), the
    call raises a retryable error; called again -- as a durable job's retry does -- it looks
    first, finds the appointment, and books nothing more."""
    connector = connect(policy=Policy("acuity", retry=Retry(attempts=2), breaker=None))
    sandbox.faults("acuity", BOOK, script=[ProviderFault.ambiguous()])
    sandbox.faults(
        "acuity",
        "GET /appointments",
        script=[ProviderFault.latency(0.0), ProviderFault.error(503), ProviderFault.error(503)],
    )
    with pytest.raises(IntegrationError) as caught:
        await book(connector)
    assert caught.value.retryable
    assert not isinstance(caught.value, OutcomeUnknownError)
    again = await book(connector)
    assert again.reconciled
    assert [e.id for e in sandbox.effects("acuity", BOOK)] == [str(again.id)]


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_a_gateway_failing_the_look_up_sends_no_booking(
    clock: FakeClock, gateway: str
) -> None:
    """A gateway that always answers 502/504 fails the look-up made before booking: a
    retryable error once attempts run out, and no booking request was sent."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with AcuityConnector(USER, KEY, base_url=server.url, clock=clock) as connector:
            with pytest.raises(IntegrationError) as caught:
                await book(connector)
        assert caught.value.retryable
        assert not any(r.method == "POST" for r in server.requests)


async def test_duplicate_rate_with_look_up_under_chaos(
    sandbox: ProviderSandbox,
    connect: Connect,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Measured: 40 appointments, each its own time, under 30% ambiguous failures and 10% 5xx
    on the booking request: the look-up settles every unknown outcome, no duplicate."""
    policy = Policy("acuity", clock=clock, retry=Retry(attempts=5), breaker=None, budget=None)
    connector = connect(policy=policy)
    chaos = [(0.3, ProviderFault.ambiguous()), (0.1, ProviderFault.error(503))]
    sandbox.faults("acuity", BOOK, chaos=chaos, seed=5)
    times = [
        f"2026-12-{day:02d}T{hour:02d}:00:00-0500"
        for day in (1, 2, 3, 4, 7)
        for hour in range(9, 17)
    ]
    reconciled = 0
    for i, when in enumerate(times):
        appointment = await book(connector, key=f"lead/{i}", when=when)
        reconciled += appointment.reconciled
    per_time = Counter(e.data["datetime"] for e in sandbox.effects("acuity", BOOK))
    with capsys.disabled():
        print(
            f"\nacuity over {len(times)} bookings: {reconciled} settled by look-up, "
            f"duplicates {sum(n - 1 for n in per_time.values())}"
        )
    assert len(per_time) == len(times)
    assert all(n == 1 for n in per_time.values())
    assert reconciled > 0


async def test_cancel_and_get(sandbox: ProviderSandbox, connect: Connect) -> None:
    """An appointment is read back by id and cancelled (idempotently)."""
    connector = connect()
    appointment = await book(connector)
    assert (await connector.get_appointment(appointment.id)).datetime == WHEN
    assert (await connector.cancel_appointment(appointment.id)).canceled
    assert (await connector.cancel_appointment(appointment.id)).canceled
    assert await connector.find_appointment(email="ada@example.com", datetime=WHEN) is None


async def test_acuity_rate_limit_is_a_429_too_many_requests(clock: FakeClock) -> None:
    """Past 10 requests in a second the simulator answers 429 ``too_many_requests`` without
    ``Retry-After``: a RateLimitedError once retries are spent."""
    assert AcuitySimulator().rate_limit == 10
    with ProviderSandbox([AcuitySimulator(user_id=USER, api_key=KEY, rate_limit=1)]) as small:
        policy = Policy("acuity", clock=clock, retry=Retry(attempts=1))
        async with AcuityConnector(
            USER, KEY, base_url=small.base_url("acuity"), policy=policy, timeout=1.0
        ) as connector:
            await connector.available_dates(appointment_type_id=1, month="2026-12")
            with pytest.raises(RateLimitedError) as caught:
                await connector.available_dates(appointment_type_id=1, month="2026-12")
        assert "too_many_requests" in str(caught.value)


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_ACUITY_USER_ID``, ``_API_KEY`` and ``_BASE_URL`` configure the connector;
    without credentials it refuses to start; a time without an offset is refused."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/acuity/")
    monkeypatch.setenv(USER_ID_ENV, "7")
    monkeypatch.setenv(API_KEY_ENV, "k")
    assert AcuityConnector().base_url == "http://127.0.0.1:9/acuity"
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ConfigurationError):
        AcuityConnector()
    monkeypatch.delenv(BASE_URL_ENV)
    assert AcuityConnector("1", "k").base_url == "https://acuityscheduling.com/api/v1"


async def test_webhooks_signed_retried_and_lost_on_cue() -> None:
    """The simulator posts ``action=scheduled`` (form, no appointment in it) signed
    ``X-Acuity-Signature`` = base64 HMAC-SHA256 of the body with the API key -- checked here
    with hmac -- retries a 500 on its schedule, and sends nothing for a ``lost`` fault."""
    receiver = Receiver()
    try:
        simulator = AcuitySimulator(user_id=USER, api_key=KEY, rate_limit=100_000)
        with ProviderSandbox(
            [simulator], webhook_urls={"acuity": receiver.url + "/hook"}, time_scale=0.0001
        ) as sandbox:
            receiver.answers = [500]
            async with AcuityConnector(
                USER, KEY, base_url=sandbox.base_url("acuity"), timeout=5.0
            ) as connector:
                first = await book(connector)
                assert await asyncio.to_thread(sandbox.webhooks.wait_idle, 30.0)
                sandbox.faults("acuity", "webhooks", script=[ProviderFault.lost_webhooks()])
                await book(connector, key="lead/2", when="2026-12-01T10:00:00-0500")
                assert await asyncio.to_thread(sandbox.webhooks.wait_idle, 30.0)
        bodies = [r.body for r in receiver.received]
        assert len(bodies) == 2  # the 500, then the retry; nothing for the lost one
        assert bodies[0] == bodies[1]
        form = receiver.received[1].form()
        assert form == {
            "action": "scheduled",
            "id": str(first.id),
            "calendarID": "1",
            "appointmentTypeID": "1",
        }
        digest = hmac.new(KEY.encode(), bodies[1], hashlib.sha256).digest()
        assert (
            receiver.received[1].headers["x-acuity-signature"] == base64.b64encode(digest).decode()
        )
    finally:
        receiver.close()
