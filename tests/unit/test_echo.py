"""What a send whose outcome is unknown learns from the provider's statuses (Echoes), on the
in-memory queue's key-value store with a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from antifragile import FakeClock
from antifragile.connectors import OutcomeUnknownError, correlation_for
from antifragile.errors import PermanentError
from antifragile.inbound import DeliveryStatus, DeliveryStatuses, Echo, Echoes
from antifragile.inbound._echo import echo_window, failure_is_permanent
from antifragile.jobs import JobDeferred, Jobs


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[Echoes, FakeClock]]:
    clock = FakeClock()
    async with Jobs(database_url="memory://", clock=clock) as jobs:
        yield Echoes(DeliveryStatuses(jobs, clock=clock), windows={"whatsapp": 60.0}), clock


def _status(key: str, status: str, code: str | None = None) -> DeliveryStatus:
    return DeliveryStatus(
        "whatsapp",
        f"wamid.{key}:{status}",
        status,
        status,
        provider_message_id=f"wamid.{key}",
        correlation=correlation_for(key),
        error_code=code,
    )


def test_windows_and_permanent_codes() -> None:
    """Ten minutes unless told otherwise; 131026 is permanent for WhatsApp, 131000 is not, and
    no code is permanent for a provider without a list."""
    assert echo_window("whatsapp") == echo_window("sendgrid") == 600.0
    assert echo_window("whatsapp", {"whatsapp": 5.0}) == 5.0
    assert failure_is_permanent("whatsapp", "131026")
    assert not failure_is_permanent("whatsapp", "131000")
    assert not failure_is_permanent("sendgrid", "550")
    assert not failure_is_permanent("whatsapp", None)


async def test_an_unknown_send_waits_then_is_confirmed_by_its_echo(
    echoes: tuple[Echoes, FakeClock],
) -> None:
    """A lost answer defers the job (the deferral names the correlation and waits at most the
    poll interval); the ``sent`` status -- recorded twice -- confirms it without a second send."""
    echo, clock = echoes
    calls: list[int] = []

    async def lost() -> str:
        calls.append(1)
        raise OutcomeUnknownError("lost", provider="whatsapp")

    with pytest.raises(JobDeferred) as deferred:
        await echo.send_once("k1", "whatsapp", lost)
    assert correlation_for("k1") in str(deferred.value)
    assert deferred.value.delay == 15.0
    clock.advance(50.0)
    with pytest.raises(JobDeferred) as again:
        await echo.send_once("k1", "whatsapp", lost)
    assert again.value.delay == 10.0  # the window ends first
    await echo.deliveries.record(_status("k1", "sent"))
    await echo.deliveries.record(_status("k1", "sent"))
    outcome = await echo.send_once("k1", "whatsapp", lost)
    assert outcome == Echo("confirmed", provider_message_id="wamid.k1")
    assert len(calls) == 1


async def test_a_failure_beats_an_earlier_sent_and_its_code_decides(
    echoes: tuple[Echoes, FakeClock],
) -> None:
    """``sent`` then ``failed`` 131026: permanent -- not sent again; ``failed`` 131000: sent
    again, and the fresh send's answer is the result."""
    echo, _ = echoes

    async def lost() -> str:
        raise OutcomeUnknownError("lost", provider="whatsapp")

    async def answered() -> str:
        return "wamid.new"

    for key in ("k2", "k3"):
        with pytest.raises(JobDeferred):
            await echo.send_once(key, "whatsapp", lost)
    await echo.deliveries.record(_status("k2", "sent"))
    await echo.deliveries.record(_status("k2", "failed", "131026"))
    with pytest.raises(PermanentError) as failed:
        await echo.send_once("k2", "whatsapp", answered)
    assert failed.value.code == "DELIVERY_FAILED"
    await echo.deliveries.record(_status("k3", "failed", "131000"))
    assert await echo.send_once("k3", "whatsapp", answered) == "wamid.new"


async def test_nothing_within_the_window_is_looked_up_reviewed_or_resent(
    echoes: tuple[Echoes, FakeClock],
) -> None:
    """Past the window: a lookup that finds the send answers; without one, ``review`` raises
    OutcomeUnknownError with the key the send carries, ``resend`` sends again."""
    echo, clock = echoes

    async def lost() -> str:
        raise OutcomeUnknownError("lost", provider="whatsapp")

    async def answered() -> str:
        return "resent"

    async def found() -> str:
        return "found"

    for key in ("a", "b", "c"):
        with pytest.raises(JobDeferred):
            await echo.send_once(key, "whatsapp", lost, reference=f"ref/{key}")
    clock.advance(61.0)
    assert await echo.send_once("a", "whatsapp", lost, reference="ref/a", lookup=found) == "found"
    with pytest.raises(OutcomeUnknownError) as unknown:
        await echo.send_once("b", "whatsapp", lost, reference="ref/b")
    assert unknown.value.reconcile_key == "ref/b"
    resent = await echo.send_once("c", "whatsapp", answered, reference="ref/c", on_unknown="resend")
    assert resent == "resent"
