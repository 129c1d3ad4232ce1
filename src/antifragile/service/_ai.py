"""``POST /v1/ai-results``: messages an AI service has already classified.

An AI assistant in front of the service (an LLM that reads the customer's message, say) posts
the message with its intent, confidence and entities. It goes the way a webhook's message goes
-- recorded durably in the inbox, deduplicated by ``message_id``, then processed by the message
pipeline as a job -- except that the pipeline takes the posted classification instead of
running its own classifier. The reply goes back on ``channel`` (WhatsApp or Twilio).

The endpoint takes the admin credentials (an API key or a JWT), like ``/v1/admin``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.service._auth import require_admin
from antifragile.service._envelope import ApiError, error_responses, ok, request_id
from antifragile.service._keys import require_scope
from antifragile.service._limits import limit_by_ip
from antifragile.service._schemas import AIAccepted, answers


class AIResult(BaseModel):
    """A message with the classification an AI service gave it."""

    model_config = ConfigDict(extra="forbid")

    message_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description="The caller's id of the message: a second post with it is a duplicate.",
        ),
    ]
    tenant: Annotated[str, Field(min_length=1, max_length=100, description="The tenant's id.")]
    channel: Literal["whatsapp", "twilio"] = Field("whatsapp", description="Where the reply goes.")
    sender: Annotated[
        str,
        Field(
            min_length=4,
            max_length=40,
            pattern=r"^(whatsapp:)?\+?[0-9]{4,20}$",
            description="The customer's phone number with country code.",
        ),
    ]
    text: Annotated[str, Field(max_length=4096, description="The customer's message.")] = ""
    intent: Annotated[
        str,
        Field(
            min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["ORDER_REQUEST"]
        ),
    ]
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    entities: dict[str, Any] = Field(default_factory=dict)


router = APIRouter(
    prefix="/v1",
    tags=["inbound"],
    dependencies=[Depends(limit_by_ip), Depends(require_admin), Depends(require_scope)],
    responses=error_responses(400, 401, 403, 429, 500, 503),
)


@router.post(
    "/ai-results",
    summary="Process a message an AI service has classified",
    status_code=202,
    responses=answers(AIAccepted, "Recorded (or a duplicate) and queued for processing", 202),
)
async def post_ai_result(request: Request, body: AIResult) -> JSONResponse:
    """Record the message (deduplicated by ``message_id``) and process it with the posted
    intent; ``data.duplicate`` is true when the message id was seen before."""
    assistant = request.app.state.assistant
    if assistant is None:
        raise ApiError(503, "STORE_UNAVAILABLE", "the service is starting", retryable=True)
    known = {tenant.id for tenant in assistant.tenants}
    if body.tenant not in known:
        raise ApiError(404, "NOT_FOUND", f"no tenant {body.tenant!r}")
    sender = body.sender.removeprefix("whatsapp:").lstrip("+")
    event = InboundEvent(
        channel=Channel.API,
        event_id=body.message_id,
        kind=EventKind.MESSAGE,
        tenant_key=body.tenant,
        sender=sender,
        text=body.text,
        topic="text",
        data={
            "reply_channel": body.channel,
            "classification": {
                "intent": body.intent,
                "confidence": body.confidence,
                "entities": body.entities,
                "source": "ai",
            },
        },
    )
    (recorded,) = await assistant.ingest([event], request_id=request_id())
    return ok(
        {"inbox_id": recorded.id, "job_id": recorded.job_id, "duplicate": not recorded.created},
        status=202,
    )
