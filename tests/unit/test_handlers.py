"""The handler registry: choice by intent, priority and minimum confidence, the UNKNOWN
fallback, the defaults and their replies, and the decorator keeping the function's type."""

from __future__ import annotations

from typing import Any, cast

import pytest

from antifragile import ConfigurationError
from antifragile.inbound import (
    BookingSettings,
    Channel,
    Classification,
    EventKind,
    HandlerResult,
    Handlers,
    InboundEvent,
    Intent,
    MessageContext,
    Tenant,
)


def classified(intent: str, confidence: float = 0.9, **entities: Any) -> Classification:
    return Classification(intent, confidence, entities)


def context(classification: Classification) -> MessageContext:
    """A message context for handlers that only read the message (no services needed)."""
    event = InboundEvent(
        Channel.WHATSAPP, "wamid.1", EventKind.MESSAGE, "123", sender="447700900123", text="hi"
    )
    return MessageContext(
        event=event,
        tenant=Tenant("shop"),
        classification=classification,
        inbox_id="inbox-1",
        jobs=cast(Any, None),
        connectors=cast(Any, None),
        tasks=cast(Any, None),
    )


def test_choice_by_intent_priority_and_min_confidence() -> None:
    """Among the handlers for the intent whose min_confidence the confidence reaches, the
    highest priority wins; on a tie of priority, the first registered."""
    handlers = Handlers()

    @handlers.on_message("ORDER_REQUEST")
    async def any_order(ctx: MessageContext) -> str:
        return "any"

    @handlers.on_message("ORDER_REQUEST", min_confidence=0.8, priority=10)
    async def sure_order(ctx: MessageContext) -> str:
        return "sure"

    @handlers.on_message("ORDER_REQUEST", min_confidence=0.8, priority=10)
    async def also_sure(ctx: MessageContext) -> str:
        return "also"

    @handlers.on_message(["PRICING_INQUIRY", "AVAILABILITY_INQUIRY"], name="questions")
    async def questions(ctx: MessageContext) -> None:
        return None

    assert handlers.choose(classified("ORDER_REQUEST", 0.95)).name == "sure_order"
    assert handlers.choose(classified("ORDER_REQUEST", 0.8)).name == "sure_order"
    assert handlers.choose(classified("ORDER_REQUEST", 0.79)).name == "any_order"
    assert handlers.choose(classified("AVAILABILITY_INQUIRY")).name == "questions"
    assert handlers.choose(classified("PRICING_INQUIRY")).intents == {
        "PRICING_INQUIRY",
        "AVAILABILITY_INQUIRY",
    }


def test_unmatched_messages_go_to_unknown_handlers_then_the_builtin_fallback() -> None:
    """No handler for the intent (or none confident enough): the UNKNOWN handlers answer;
    without any, the built-in fallback -- which flags the message for review -- does."""
    handlers = Handlers()

    @handlers.on_message("ORDER_REQUEST", min_confidence=0.9)
    async def order(ctx: MessageContext) -> str:
        return "order"

    fallback = handlers.choose(classified("ORDER_REQUEST", 0.5))
    assert fallback is handlers.fallback
    assert fallback.actions == ("flag_for_review",)
    assert handlers.choose(classified("COMPLAINT")) is handlers.fallback

    @handlers.on_message("UNKNOWN", min_confidence=0.99)
    async def unknown(ctx: MessageContext) -> str:
        return "?"

    assert handlers.choose(classified("ORDER_REQUEST", 0.5)).name == "unknown"
    assert handlers.choose(classified("UNKNOWN", 0.1)).name == "unknown"


def test_a_wildcard_handler_answers_any_intent_by_priority() -> None:
    """A handler for "*" is a candidate for every intent; priority decides."""
    handlers = Handlers()

    @handlers.on_message("*", priority=-1)
    async def catch_all(ctx: MessageContext) -> str:
        return "all"

    @handlers.on_message("COMPLAINT")
    async def complaint(ctx: MessageContext) -> str:
        return "sorry"

    assert handlers.choose(classified("COMPLAINT")).name == "complaint"
    assert handlers.choose(classified("SOMETHING_ELSE")).name == "catch_all"


async def test_handler_answers_become_handler_results() -> None:
    """A handler may return a HandlerResult, a reply string or None (no reply)."""
    handlers = Handlers()

    @handlers.on_message("A")
    async def full(ctx: MessageContext) -> HandlerResult:
        return HandlerResult("hello", {"rush": True})

    @handlers.on_message("B")
    async def text(ctx: MessageContext) -> str:
        return "hi"

    @handlers.on_message("C")
    async def silent(ctx: MessageContext) -> None:
        return None

    ctx = context(classified("A"))
    assert await handlers.get("full").run(ctx) == HandlerResult("hello", {"rush": True})
    assert await handlers.get("text").run(ctx) == HandlerResult("hi")
    assert await handlers.get("silent").run(ctx) == HandlerResult()


async def test_decorator_returns_the_function_unchanged() -> None:
    """The decorator registers and hands back the very function, so it stays callable with
    its own type (mypy checks the annotated call below)."""
    handlers = Handlers()

    async def original(ctx: MessageContext) -> str:
        return "same"

    decorated = handlers.on_message("X")(original)
    assert decorated is original
    reply: str = await decorated(context(classified("X")))
    assert reply == "same"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intent": []}, "at least one"),
        ({"intent": "X", "min_confidence": 1.5}, "min_confidence"),
        ({"intent": "X", "priority": 1.5}, "priority"),
        ({"intent": "X", "actions": "notify_sales"}, "not a str"),
        ({"intent": "X", "name": "fallback"}, "already registered"),
    ],
)
def test_bad_registrations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """Empty intents, a confidence outside [0, 1], a non-int priority, actions given as one
    string and a duplicate name are ConfigurationErrors."""
    handlers = Handlers()

    async def fn(ctx: MessageContext) -> None:
        return None

    with pytest.raises(ConfigurationError, match=message):
        handlers.on_message(**kwargs)(fn)


async def test_defaults_cover_every_intent_with_replies_and_actions() -> None:
    """register_defaults adds one handler per intent, with the documented actions and a
    helpful reply; an order's reply repeats the quantity."""
    handlers = Handlers()
    handlers.register_defaults(booking=BookingSettings())
    expected = {
        "ORDER_REQUEST": ("notify_sales", "create_order"),
        "PRICING_INQUIRY": ("notify_sales",),
        "COMPLAINT": ("create_support_ticket", "notify_sales"),
        "AVAILABILITY_INQUIRY": ("flag_for_review",),
        "SCHEDULE_CALL": ("book_call", "notify_sales"),
        "UNKNOWN": ("flag_for_review",),
    }
    for intent, actions in expected.items():
        handler = handlers.choose(classified(intent))
        assert handler.actions == actions, intent
        assert handler is not handlers.fallback
        result = await handler.run(context(classified(intent)))
        assert result.reply, intent
    order = handlers.choose(classified("ORDER_REQUEST"))
    result = await order.run(context(classified("ORDER_REQUEST", quantity=3, unit="boxes")))
    assert result.reply is not None
    assert "3 boxes" in result.reply
    assert {i.value for i in Intent} == set(expected)


async def test_the_booking_reply_carries_the_booking_link() -> None:
    """With a Cal.com username the SCHEDULE_CALL reply holds the public booking link (built
    without a network call) and passes it to the actions; without one it promises a call."""
    with_link = Handlers()
    with_link.register_defaults(booking=BookingSettings(username="alice", event_type_slug="intro"))
    handler = with_link.choose(classified("SCHEDULE_CALL"))
    result = await handler.run(context(classified("SCHEDULE_CALL")))
    assert result.reply is not None
    assert "https://cal.com/alice/intro" in result.reply
    assert result.data == {"booking_link": "https://cal.com/alice/intro"}

    without = Handlers()
    without.register_defaults(booking=BookingSettings())
    plain = await without.choose(classified("SCHEDULE_CALL")).run(
        context(classified("SCHEDULE_CALL"))
    )
    assert plain.reply is not None
    assert "cal.com" not in plain.reply


def test_booking_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BookingSettings.from_env reads the Cal.com username, event type and time zone."""
    monkeypatch.setenv("ANTIFRAGILE_CALCOM_USERNAME", "bob")
    monkeypatch.setenv("ANTIFRAGILE_CALCOM_EVENT_TYPE", "15min")
    monkeypatch.setenv("ANTIFRAGILE_CALCOM_EVENT_TYPE_ID", "42")
    monkeypatch.setenv("ANTIFRAGILE_CALCOM_TIME_ZONE", "Europe/Madrid")
    settings = BookingSettings.from_env()
    assert settings == BookingSettings("bob", "15min", 42, time_zone="Europe/Madrid")
    assert settings.link() == "https://cal.com/bob/15min"
    monkeypatch.setenv("ANTIFRAGILE_CALCOM_EVENT_TYPE_ID", "forty-two")
    with pytest.raises(ConfigurationError):
        BookingSettings.from_env()
