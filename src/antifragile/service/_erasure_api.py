"""``POST /v1/admin/erasure``: delete every record about one customer (admin credentials).

The body names the person -- ``{"phone": "+447700900123"}``, ``{"email": "ada@example.com"}``
or both -- and may ask for a ``dry_run`` (count, delete nothing). The answer counts what was
erased per kind of record (see :mod:`antifragile.inbound._erasure`); a second call finds
nothing. The request id of the call and the masked subject are logged, never the phone number
or the address.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from antifragile.errors import ErrorCode
from antifragile.inbound._erasure import erase
from antifragile.service._auth import require_admin
from antifragile.service._envelope import ApiError, error_responses, ok
from antifragile.service._keys import require_scope
from antifragile.service._limits import limit_by_ip
from antifragile.service._schemas import answers

_log = logging.getLogger("antifragile.service.erasure")


class ErasureRequest(BaseModel):
    """Whom to erase: a phone number, an email address, or both."""

    model_config = ConfigDict(extra="forbid")

    phone: Annotated[
        str | None,
        Field(
            max_length=40,
            pattern=r"^(whatsapp:|tel:)?\+?[0-9 ().-]{7,30}$",
            description="The customer's phone number (with country code).",
        ),
    ] = None
    email: Annotated[
        str | None,
        Field(
            max_length=254,
            pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
            description="The customer's email address.",
        ),
    ] = None
    dry_run: bool = Field(False, description="Count what would be erased; delete nothing.")

    @model_validator(mode="after")
    def _someone(self) -> ErasureRequest:
        if self.phone is None and self.email is None:
            raise ValueError("name the customer: phone, email or both")
        return self


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(limit_by_ip), Depends(require_admin), Depends(require_scope)],
    responses=error_responses(400, 401, 403, 429, 500, 503),
)


class ErasureReport(BaseModel):
    """What was erased (or, in a dry run, would be)."""

    subject: str = Field(description="whom, masked")
    dry_run: bool
    erased: dict[str, int] = Field(description="records erased, per kind")
    total: int
    jobs_pending: int = Field(
        description="running jobs about them (left to their worker: references); waiting "
        "ones are cancelled and counted under erased.jobs_cancelled"
    )


@router.post(
    "/erasure",
    summary="Erase every record about one customer",
    responses=answers(ErasureReport, "What was erased, per kind of record"),
)
async def post_erasure(request: Request, body: ErasureRequest) -> JSONResponse:
    """Delete the customer's inbox entries, sessions, outbound messages, tasks, finished jobs,
    dead-letter entries and idempotency records, and cancel their waiting jobs;
    ``data.erased`` counts them per kind (``dry_run``: would)."""
    assistant = getattr(request.app.state, "assistant", None)
    if assistant is None:
        raise ApiError(503, ErrorCode.STORE_UNAVAILABLE, "the service is starting; retry later")
    digits = sum(c.isdigit() for c in body.phone or "")
    if body.phone is not None and not 7 <= digits <= 15:
        raise ApiError(400, ErrorCode.VALIDATION, "phone: a phone number has 7 to 15 digits")
    report = await erase(
        assistant.jobs,
        phone=body.phone,
        email=body.email,
        dry_run=body.dry_run,
        tenants=[tenant.id for tenant in assistant.tenants],
    )
    _log.info(
        "erasure of %s: %d record(s)%s",
        report.subject,
        report.total,
        " (dry run)" if report.dry_run else "",
    )
    return ok(report.to_json())
