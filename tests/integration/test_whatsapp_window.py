"""The 24-hour customer-service window and message templates, against the sandbox's Cloud API
simulator over real HTTP: the simulator refuses free-form messages outside the window (131047)
and checks templates (132000, 132001, 132015); the connector and the replies send the tenant's
template when the window is closed, for nudges, and when Cloud API says 131047.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from antifragile import FakeClock, IntegrationError, InvalidRequestError
from antifragile.connectors import WhatsAppConnector, WhatsAppTemplate
from antifragile.inbound import (
    Channel,
    DeliveryStatus,
    EventKind,
    InboundEvent,
    parse_whatsapp,
)
from antifragile.sandbox import ProviderSandbox, WhatsAppSimulator, whatsapp_status
from tests.integration import test_sessions as base
from tests.integration.test_sessions import CONTACT, PHONE_ID, WA_TOKEN, World

providers = base.providers  # a fixture shared with the sessions tests

DAY = 24 * 3600.0
STRANGER = "15550009999"
FOLLOW_UP = WhatsAppTemplate("follow_up", "en_US", ("Your order has shipped.",))
ACME = dataclasses.replace(
    base.TENANT, whatsapp_template="follow_up", whatsapp_template_parameters="{text}"
)


@pytest.fixture
def simulator() -> WhatsAppSimulator:
    return WhatsAppSimulator(
        access_tokens=[WA_TOKEN],
        phone_number_ids=[PHONE_ID],
        window=DAY,
        templates={"follow_up": {"en_US": 1}, "order_ready": {"en_US": 0}},
        paused_templates=["order_ready"],
    )


@pytest.fixture
def sandbox(simulator: WhatsAppSimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox(base.simulators(simulator)) as running:
        yield running


@pytest.fixture
async def whatsapp(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[WhatsAppConnector]:
    async with WhatsAppConnector(
        WA_TOKEN, phone_number_id=PHONE_ID, base_url=sandbox.base_url("whatsapp"), clock=clock
    ) as connector:
        yield connector


def graph_code(error: IntegrationError) -> int:
    assert error.detail is not None
    code: int = json.loads(error.detail)["error"]["code"]
    return code


async def test_free_form_messages_need_the_window_open(
    simulator: WhatsAppSimulator, sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    """A contact who never wrote, or wrote 24 hours ago, gets no free-form message (400 with
    131047, nothing sent); one who wrote lately does. Over HTTP too."""
    with pytest.raises(InvalidRequestError) as refused:
        await whatsapp.send_text(STRANGER, "Hello")
    assert refused.value.status == 400
    assert graph_code(refused.value) == 131047
    assert "131047" in str(refused.value)

    simulator.customer_wrote(CONTACT, ago=DAY + 1)
    with pytest.raises(InvalidRequestError):
        await whatsapp.send_text(CONTACT, "Hello")
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{sandbox.base_url('whatsapp')}/_sandbox/customers/{CONTACT}",
            headers={"authorization": f"Bearer {WA_TOKEN}"},
            json={"ago": 60},
        )
    assert answer.status_code == 200
    await whatsapp.send_text(CONTACT, "Hello")
    assert [e.data["to"] for e in sandbox.effects("whatsapp")] == [CONTACT]


@pytest.mark.parametrize(
    ("template", "status", "code"),
    [
        (WhatsAppTemplate("no_such_template"), 404, 132001),
        (WhatsAppTemplate("follow_up", "de_DE", ("x",)), 404, 132001),
        (WhatsAppTemplate("follow_up", "en_US", ()), 400, 132000),
        (WhatsAppTemplate("follow_up", "en_US", ("a", "b")), 400, 132000),
        (WhatsAppTemplate("order_ready"), 400, 132015),
    ],
)
async def test_template_errors(
    sandbox: ProviderSandbox,
    whatsapp: WhatsAppConnector,
    template: WhatsAppTemplate,
    status: int,
    code: int,
) -> None:
    """Templates are checked against the approved ones, whatever the window says."""
    with pytest.raises(IntegrationError) as refused:
        await whatsapp.send_template(
            STRANGER, template.name, language=template.language, components=template.components()
        )
    assert (refused.value.status, graph_code(refused.value)) == (status, code)
    assert sandbox.effects("whatsapp") == []


async def test_outside_the_window_the_template_goes_out_directly(
    sandbox: ProviderSandbox, whatsapp: WhatsAppConnector, clock: FakeClock
) -> None:
    """The connector knows the contact wrote 25 hours ago: one request, the template."""
    sent = await whatsapp.send_within_window(
        STRANGER, "Your order has shipped.", FOLLOW_UP, last_inbound=clock.time() - DAY - 3600
    )
    (request,) = sandbox.requests
    (effect,) = sandbox.effects("whatsapp")
    assert request.json()["type"] == "template"
    assert effect.id == sent.id
    assert effect.data["template"] == {
        "name": "follow_up",
        "language": {"code": "en_US"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Your order has shipped."}]}
        ],
    }


@pytest.mark.parametrize("last_inbound", [None, "an hour ago"])
async def test_a_131047_refusal_falls_back_to_the_template(
    sandbox: ProviderSandbox,
    whatsapp: WhatsAppConnector,
    clock: FakeClock,
    last_inbound: str | None,
) -> None:
    """The connector thinks the window may be open (or does not know): the free-form message
    is tried, refused with 131047, and the template is sent under the same correlation."""
    known = None if last_inbound is None else clock.time() - 3600
    sent = await whatsapp.send_within_window(
        STRANGER, "Your order has shipped.", FOLLOW_UP, last_inbound=known, reference="r-1"
    )
    first, second = sandbox.requests
    assert (first.json()["type"], second.json()["type"]) == ("text", "template")
    assert first.json()["biz_opaque_callback_data"] == second.json()["biz_opaque_callback_data"]
    (effect,) = sandbox.effects("whatsapp")
    assert effect.id == sent.id
    assert effect.data["type"] == "template"


async def test_inside_the_window_free_form_goes_out(
    simulator: WhatsAppSimulator, sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    simulator.customer_wrote(CONTACT)
    await whatsapp.send_within_window(CONTACT, "Thanks!", FOLLOW_UP, options=["Yes", "No"])
    (effect,) = sandbox.effects("whatsapp")
    assert effect.data["type"] == "interactive"


@pytest.fixture
async def world(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: base.Providers
) -> AsyncIterator[World]:
    made = base.build(tmp_path, clock, sandbox, providers, tenant=ACME)
    async with made.jobs:
        yield made


def message(world: World, text: str, *, at: float) -> InboundEvent:
    world.counter[0] += 1
    return InboundEvent(
        Channel.WHATSAPP,
        f"wamid.w{world.counter[0]}",
        EventKind.MESSAGE,
        PHONE_ID,
        sender=CONTACT,
        text=text,
        occurred_at=at,
    )


async def test_a_late_reply_goes_out_as_the_tenant_template(
    simulator: WhatsAppSimulator, world: World
) -> None:
    """A reply to a message 25 hours old (a long outage) is the tenant's template, its
    parameter the reply's text; a reply to a fresh message is the text itself."""
    old = message(world, "Hello", at=world.clock.time() - DAY - 3600)
    await world.replies.reply(ACME, old, "Sorry for the wait!")
    simulator.customer_wrote(CONTACT)
    fresh = message(world, "Still there?", at=world.clock.time())
    await world.replies.reply(ACME, fresh, "Yes!")
    await world.worker.run_until_idle()
    late, current = world.effects("whatsapp")
    assert late.data["type"] == "template"
    assert late.data["template"]["components"][0]["parameters"] == [
        {"type": "text", "text": "Sorry for the wait!"}
    ]
    assert current.data["type"] == "text"
    assert len(world.sandbox.requests) == 2  # the late one was not tried free-form first


async def test_a_nudge_is_the_tenant_template(simulator: WhatsAppSimulator, world: World) -> None:
    """Nudges go out as the tenant's template (even within the window), rendered with the
    nudge text."""
    simulator.customer_wrote(CONTACT)
    for text in ("Hello", "Ada"):
        await world.sessions.handle(ACME, message(world, text, at=world.clock.time()))
    world.clock.advance(2 * 3600 + 1)
    assert await world.sessions.nudge_inactive() == 1
    await world.worker.run_until_idle()
    (nudge,) = world.effects("whatsapp")
    assert nudge.data["type"] == "template"
    (parameter,) = nudge.data["template"]["components"][0]["parameters"]
    assert parameter["text"].startswith("Just checking in")
    assert "Ada" in parameter["text"]


async def test_a_later_131047_failure_sends_the_reply_again_as_the_template(
    simulator: WhatsAppSimulator, world: World
) -> None:
    """Cloud API accepted the free-form reply, then reported it ``failed`` with 131047 (the
    window had closed): the reply goes out again, once, as the tenant's template."""
    simulator.customer_wrote(CONTACT)
    event = message(world, "Hello", at=world.clock.time())
    message_id = await world.replies.reply(ACME, event, "We open at nine.")
    await world.worker.run_until_idle()
    (free_form,) = world.effects("whatsapp")
    body = whatsapp_status(
        message_id=free_form.id,
        recipient_id=CONTACT,
        status="failed",
        errors=[{"code": 131047, "title": "Re-engagement message"}],
        phone_number_id=PHONE_ID,
    )
    (failed,) = parse_whatsapp(json.dumps(body).encode())
    for _ in range(2):  # a redelivered status changes nothing more
        await world.replies.deliveries.record(DeliveryStatus.from_event(failed))
        await world.worker.run_until_idle()
    free, template = world.effects("whatsapp")
    assert free.data["type"] == "text"
    assert template.data["type"] == "template"
    assert template.data["template"]["components"][0]["parameters"] == [
        {"type": "text", "text": "We open at nine."}
    ]
    original = await world.replies.get(message_id)
    assert original is not None
    resent = await world.replies.get(original["resent_as"])
    assert resent is not None
    assert resent["status"] == "sent"
    assert resent["template_only"] is True
