"""Interactive WhatsApp messages: a flow's ``choice`` question goes out as reply buttons or a
list message through the sandbox's Cloud API simulator over real HTTP, and the contact's
``button_reply`` / ``list_reply`` (parsed from the webhook body the sandbox builds) answers it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.connectors import WhatsAppConnector
from antifragile.inbound import Flow, FlowStep, parse_whatsapp
from antifragile.sandbox import ProviderSandbox, whatsapp_interactive_reply
from tests.integration.test_sessions import (
    CONTACT,
    PHONE_ID,
    TENANT,
    WA_TOKEN,
    Providers,
    World,
    build,
    providers,
    sandbox,
)

__all__ = ["providers", "sandbox"]  # fixtures shared with the sessions tests

SIZES = ("S", "M", "L")
SLOTS = tuple(f"{day} {part}" for day in ("Mon", "Tue", "Wed") for part in ("am", "pm"))
LONG = "Weekday mornings before the school run"
FLOW = Flow(
    name="intake",
    steps=(
        FlowStep("size", "Which size?", validate="choice:" + ",".join(SIZES)),
        FlowStep("slot", "When suits you?", validate="choice:" + ",".join((*SLOTS, LONG))),
        FlowStep("name", "Your name?"),
    ),
    on_complete=(),
)


@pytest.fixture
async def world(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> AsyncIterator[World]:
    made = build(tmp_path, clock, sandbox, providers, flows={"intake": FLOW})
    async with made.jobs:
        yield made


def tapped(reply_id: str, title: str, kind: str = "button_reply") -> Any:
    """The event of a contact's tap, as the service parses it from Cloud API's webhook."""
    body = whatsapp_interactive_reply(
        from_=CONTACT, reply_id=reply_id, title=title, kind=kind, phone_number_id=PHONE_ID
    )
    (event,) = parse_whatsapp(json.dumps(body).encode())
    return event


async def ask(world: World, event: Any) -> dict[str, Any]:
    """Handle *event*, send the turn's reply through the worker; the message Cloud API got."""
    turn = await world.sessions.handle(TENANT, event)
    assert turn is not None
    await world.replies.reply(TENANT, event, turn.reply, choices=turn.choices)
    await world.worker.run_until_idle()
    data: dict[str, Any] = world.effects("whatsapp")[-1].data
    return data


async def test_a_choice_question_is_sent_as_buttons_and_a_tap_answers_it(world: World) -> None:
    """Three short options are reply buttons whose ids name the step; tapping one stores the
    option; the next choice (7 options, one over 24 characters) is a list message."""
    sent = await ask(world, world.event("Hello"))
    assert sent["type"] == "interactive"
    assert sent["interactive"]["type"] == "button"
    assert sent["interactive"]["body"]["text"].endswith("Which size?")
    assert [b["reply"] for b in sent["interactive"]["action"]["buttons"]] == [
        {"id": "size:1", "title": "S"},
        {"id": "size:2", "title": "M"},
        {"id": "size:3", "title": "L"},
    ]

    sent = await ask(world, tapped("size:2", "M"))
    assert (await world.record())["fields"] == {"size": "M"}
    assert sent["interactive"]["type"] == "list"
    (section,) = sent["interactive"]["action"]["sections"]
    rows = section["rows"]
    assert [r["id"] for r in rows] == [f"slot:{i}" for i in range(1, 8)]
    assert all(len(r["title"]) <= 24 for r in rows)
    assert rows[-1]["description"] == LONG

    # the long option is picked by its row id, although its title was shortened
    await ask(world, tapped("slot:7", rows[-1]["title"], kind="list_reply"))
    assert (await world.record())["fields"] == {"size": "M", "slot": LONG}


async def test_typed_answers_and_stale_taps_still_work(world: World) -> None:
    """A typed option (or its number) answers a choice; a tap on a button of another step is
    read by its label; a label that is not an option gets the error and the buttons again."""
    await ask(world, world.event("Hello"))
    await ask(world, world.event("l"))
    assert (await world.record())["fields"] == {"size": "L"}
    again = await ask(world, tapped("size:1", "S"))  # an old button: its label is no slot
    assert again["interactive"]["type"] == "list"
    assert (await world.record())["fields"] == {"size": "L"}
    await ask(world, world.event("2"))
    assert (await world.record())["fields"] == {"size": "L", "slot": SLOTS[1]}
    plain = await ask(world, world.event("Ada"))  # the completion asks nothing: plain text
    assert plain["type"] == "text"


@pytest.fixture
async def whatsapp(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[WhatsAppConnector]:
    async with WhatsAppConnector(
        WA_TOKEN, phone_number_id=PHONE_ID, base_url=sandbox.base_url("whatsapp"), clock=clock
    ) as connector:
        yield connector


async def test_too_many_options_fall_back_to_numbered_text(
    sandbox: ProviderSandbox, whatsapp: WhatsAppConnector
) -> None:
    """More than 10 options fit no interactive message: the text lists them numbered (a typed
    number answers a choice)."""
    options = [f"option {i}" for i in range(1, 12)]
    await whatsapp.send_choice(CONTACT, "Pick one", options)
    (effect,) = sandbox.effects("whatsapp")
    assert effect.data["type"] == "text"
    assert effect.data["text"]["body"].splitlines()[-1] == "11. option 11"


def test_a_choice_needs_distinct_options_and_ids() -> None:
    from antifragile.connectors._whatsapp import interactive_choice

    with pytest.raises(ConfigurationError):
        interactive_choice("Pick", ["a", "a"])
    with pytest.raises(ConfigurationError):
        interactive_choice("Pick", ["a", "b"], ids=["1"])
    assert interactive_choice("x" * 1025, ["a", "b"]) is None


def _buttons(*titles: str, ids: tuple[str, ...] | None = None) -> dict[str, Any]:
    keys = ids or tuple(str(i) for i in range(len(titles)))
    return {
        "type": "button",
        "body": {"text": "Pick"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": k, "title": t}}
                for k, t in zip(keys, titles, strict=True)
            ]
        },
    }


def _list(rows: int, *, title: str = "row", button: str = "Choose") -> dict[str, Any]:
    return {
        "type": "list",
        "body": {"text": "Pick"},
        "action": {
            "button": button,
            "sections": [{"rows": [{"id": str(i), "title": f"{title}{i}"} for i in range(rows)]}],
        },
    }


@pytest.mark.parametrize(
    ("interactive", "needle"),
    [
        (_buttons("a", "b", "c", "d"), "1 to 3 buttons"),
        (_buttons("x" * 21), "1 to 20 characters"),
        (_buttons("a", "a"), "unique"),
        (_buttons("a", ids=("x" * 257,)), "1 to 256"),
        (_list(11), "at most 10 rows"),
        (_list(2, title="y" * 24), "1 to 24 characters"),
        (_list(2, button="z" * 21), "1 to 20 characters"),
        ({**_buttons("a"), "body": {"text": "b" * 1025}}, "1 to 1024"),
        ({**_buttons("a"), "type": "carousel"}, "Unsupported interactive type"),
    ],
)
def test_the_simulator_refuses_interactive_messages_over_the_limits(
    sandbox: ProviderSandbox, interactive: dict[str, Any], needle: str
) -> None:
    """What breaks a documented limit is a 400 with Graph code 100, and nothing is sent."""
    answer = httpx.post(
        f"{sandbox.base_url('whatsapp')}/v21.0/{PHONE_ID}/messages",
        headers={"authorization": f"Bearer {WA_TOKEN}"},
        json={
            "messaging_product": "whatsapp",
            "to": CONTACT,
            "type": "interactive",
            "interactive": interactive,
        },
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100
    assert needle in answer.json()["error"]["error_data"]["details"]
    assert sandbox.effects("whatsapp") == []
