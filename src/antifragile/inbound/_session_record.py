"""The record of one conversation session: a typed, frozen value with explicit JSON.

The record is stored as one JSON object in the key-value store beside the job queue (see
:mod:`antifragile.inbound._sessions`). Its status flags are top-level fields (``email_status``,
``shopify_status``...) because the queue writes them there, in the transaction that changes
the job; :meth:`SessionRecord.to_json` and :meth:`SessionRecord.from_json` are the only
places that know the stored shape. Fields the record does not model -- what an action
remembered (``summary_email_id``, ``shopify_customer_id``...) or a newer version wrote -- are
kept in :attr:`SessionRecord.extra` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from antifragile.inbound._sealing import seal, unseal

ProgressStatus = Literal["new", "in_progress", "completed"]
#: the values of a status flag
FLAG_VALUES = ("none", "pending", "sent", "failed", "skipped")
_PROGRESS: tuple[ProgressStatus, ...] = ("new", "in_progress", "completed")


@dataclass(frozen=True, slots=True)
class RecentTurn:
    """A message handled lately, and what it was answered: handled again, it is answered
    the same way and changes nothing."""

    event_id: str
    reply: str
    completed: bool
    step: int

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "reply": self.reply,
            "completed": self.completed,
            "step": self.step,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecentTurn:
        return cls(
            str(data.get("event_id") or ""),
            str(data.get("reply") or ""),
            bool(data.get("completed")),
            _int(data.get("step")),
        )


def _is_flag(name: str) -> bool:
    return name.endswith("_status") and name != "progress_status"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One contact's session with a tenant's flow (see the module docs).

    ``flags`` maps each status flag field (``email_status``...) to its value (``none`` |
    ``pending`` | ``sent`` | ``failed`` | ``skipped``); ``actions`` are the actions this
    round's completion runs, ``jobs`` their job ids and ``redrives`` the sweep's redrives,
    both by action name; ``recent`` the last messages handled.
    """

    key: str
    tenant_id: str
    flow: str
    channel: str
    phone: str
    round: int = 0
    step: int = 0
    fields: Mapping[str, str] = field(default_factory=dict)
    progress_status: ProgressStatus = "new"
    flags: Mapping[str, str] = field(default_factory=dict)
    actions: tuple[str, ...] = ()
    nudge_sent: bool = False
    nudged_at: float | None = None
    last_active: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    jobs: Mapping[str, str] = field(default_factory=dict)
    redrives: Mapping[str, int] = field(default_factory=dict)
    recent: tuple[RecentTurn, ...] = ()
    twilio_whatsapp: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SessionRecord:
        """A copy with *changes*."""
        return dataclasses.replace(self, **changes)

    def flag(self, name: str) -> str:
        """The value of the status flag *name* (``none`` when it was never set)."""
        return self.flags.get(name, "none")

    def to_json(self) -> dict[str, Any]:
        """The stored shape: one flat JSON object (flags as top-level fields)."""
        data: dict[str, Any] = dict(self.extra)
        data.update(
            key=self.key,
            tenant_id=self.tenant_id,
            flow=self.flow,
            channel=self.channel,
            phone=self.phone,
            round=self.round,
            step=self.step,
            fields=dict(self.fields),
            progress_status=self.progress_status,
            actions=list(self.actions),
            nudge_sent=self.nudge_sent,
            nudged_at=self.nudged_at,
            last_active=self.last_active,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            jobs=dict(self.jobs),
            redrives=dict(self.redrives),
            recent=[turn.to_json() for turn in self.recent],
        )
        data.update(self.flags)
        if self.twilio_whatsapp is not None:
            data["twilio_whatsapp"] = self.twilio_whatsapp
        return data

    def to_stored_json(self) -> dict[str, Any]:
        """:meth:`to_json` with the phone, the answers and the recent messages sealed when a
        data key is configured (:mod:`antifragile.inbound._sealing`): what the store keeps."""
        data = self.to_json()
        for name in ("phone", "fields", "recent"):
            data[name] = seal(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionRecord:
        """The record stored as *data* -- by :meth:`to_json` or :meth:`to_stored_json` --
        (fields it does not model go to ``extra``)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"flags", "extra"}
        progress = data.get("progress_status")
        fields = unseal(data.get("fields"))
        recent = unseal(data.get("recent"))
        jobs = data.get("jobs")
        redrives = data.get("redrives")
        actions = data.get("actions")
        twilio = data.get("twilio_whatsapp")
        return cls(
            key=str(data.get("key") or ""),
            tenant_id=str(data.get("tenant_id") or ""),
            flow=str(data.get("flow") or ""),
            channel=str(data.get("channel") or ""),
            phone=str(unseal(data.get("phone")) or ""),
            round=_int(data.get("round")),
            step=_int(data.get("step")),
            fields={str(k): str(v) for k, v in fields.items()}
            if isinstance(fields, Mapping)
            else {},
            progress_status=progress if progress in _PROGRESS else "new",
            flags={k: str(v) for k, v in data.items() if _is_flag(k) and isinstance(v, str)},
            actions=tuple(str(a) for a in actions) if isinstance(actions, list) else (),
            nudge_sent=bool(data.get("nudge_sent")),
            nudged_at=_float(data.get("nudged_at")),
            last_active=_float(data.get("last_active")) or 0.0,
            created_at=_float(data.get("created_at")) or 0.0,
            started_at=_float(data.get("started_at")),
            completed_at=_float(data.get("completed_at")),
            jobs={str(k): str(v) for k, v in jobs.items()} if isinstance(jobs, Mapping) else {},
            redrives={str(k): int(v) for k, v in redrives.items() if isinstance(v, int)}
            if isinstance(redrives, Mapping)
            else {},
            recent=tuple(RecentTurn.from_json(r) for r in recent if isinstance(r, Mapping))
            if isinstance(recent, list)
            else (),
            twilio_whatsapp=twilio if isinstance(twilio, bool) else None,
            extra={k: v for k, v in data.items() if k not in known and not _is_flag(k)},
        )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
