"""How users register handlers and actions and classify messages, checked by ``mypy --strict``
only (never executed).

The decorators hand back the very function, typed as written; a handler or action with the
wrong signature fails type-checking.
"""

from __future__ import annotations

from typing import Any, assert_type

from antifragile.connectors import Connectors
from antifragile.inbound import (
    ActionContext,
    Actions,
    Classification,
    Classifier,
    DeliveryHook,
    DeliveryMatch,
    DeliveryStatus,
    DeliveryStatuses,
    HandlerResult,
    Handlers,
    KeywordClassifier,
    MessageContext,
    RegisteredHandler,
    SessionRecord,
    Sessions,
    Tasks,
)
from antifragile.jobs import Enqueued, Jobs, Saga

jobs = Jobs(database_url="sqlite:///antifragile.db")
handlers = Handlers()
actions = Actions(Connectors())


@handlers.on_message("ORDER_REQUEST", min_confidence=0.7, priority=5, actions=["notify_sales"])
async def order(ctx: MessageContext) -> HandlerResult:
    return HandlerResult(reply=f"Thanks, {ctx.tenant.name}!", data={"rush": True})


@handlers.on_message(["PRICING_INQUIRY", "AVAILABILITY_INQUIRY"])
async def question(ctx: MessageContext) -> str | None:
    return None


async def undo_lead(ctx: ActionContext) -> None:
    assert_type(ctx.result, Any)


@actions.action("create_lead", provider="hubspot", compensate=undo_lead)
async def create_lead(ctx: ActionContext) -> dict[str, str]:
    return {"key": ctx.idempotency_key}


@actions.action(
    "create_crm_lead",
    provider="hubspot",
    flag="lead_status",
    feature="lead_sync",
    applies=lambda tenant, contact: contact.email is not None,
    on_unknown="reconcile",  # "resend" | "review"; anything else fails type-checking
)
async def create_crm_lead(ctx: ActionContext) -> None:
    assert_type(ctx.contact.email, str | None)
    assert_type(ctx.session, SessionRecord | None)
    await ctx.remember(lead_id="42")


async def sessions_usage(sessions: Sessions) -> None:
    record = await sessions.get(Sessions.key_for("acme", "447700900123"))
    assert_type(record, SessionRecord | None)
    if record is not None:
        assert_type(record.flag("email_status"), str)
        assert_type(record.to_json(), dict[str, Any])


async def usage(classification: Classification) -> None:
    classifier: Classifier = KeywordClassifier(threshold=0.6)
    assert_type(await classifier.classify("hi"), Classification)
    handler = handlers.choose(classification)
    assert_type(handler, RegisteredHandler)
    assert_type(actions.saga_for(jobs, handler), Saga)
    started = await actions.start(
        jobs, handler, inbox_id="i", tenant_id="t", classification=classification
    )
    assert_type(started, Enqueued | None)
    assert_type(await order(MessageContext.__new__(MessageContext)), HandlerResult)
    assert_type(await create_lead(ActionContext.__new__(ActionContext)), dict[str, str])
    task = await Tasks(jobs).create(type="review", title="x", key="k")
    assert_type(task, dict[str, Any])


deliveries = DeliveryStatuses(jobs)


@deliveries.on_status
async def settle(status: DeliveryStatus, match: DeliveryMatch) -> None:
    """A hook on delivery statuses: the status typed, what it matched, nothing returned."""
    assert_type(status.status, str)
    assert_type(status.correlation, str | None)
    assert_type(match.message_id, str | None)


hook: DeliveryHook = settle  # the decorator hands back the function itself
