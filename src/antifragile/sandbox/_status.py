"""Status webhooks: after accepting a send, a simulator reports its fate as the provider does.

A :class:`StatusWebhooks` belongs to a :class:`~antifragile.sandbox.ProviderSandbox`. When a
provider has a callback URL (:meth:`StatusWebhooks.configure`; Twilio also takes each
message's ``StatusCallback``), each send it accepts is followed by the provider's status
webhooks, signed the provider's way, POSTed from a background thread in order, one
``interval`` apart:

========  ==========================================================================  ==========
WhatsApp  ``statuses[]`` ``sent``, ``delivered``, ``read`` (``failed`` with ``errors``)  Meta
Twilio    form POST ``MessageStatus`` ``sent``, ``delivered`` (``read`` on WhatsApp)    Twilio
SendGrid  Event Webhook arrays: ``processed``, ``delivered`` (``bounce``)              SendGrid
Resend    Svix-signed ``email.sent``, ``email.delivered`` (``email.bounced``)          Resend
Cal.com   ``BOOKING_CREATED`` with the booking's ``metadata``                          Cal.com
HubSpot   ``contact.creation`` events (v3 signature)                                  HubSpot
========  ==========================================================================  ==========

Every webhook echoes the send's correlation (``biz_opaque_callback_data``, the
``StatusCallback`` URL, ``custom_args``, tags, ``metadata``). A webhook answered with a non-2xx
status (or not answered) is sent again on the provider's schedule (:data:`RETRY_DELAYS`, in
seconds, multiplied by ``time_scale`` so that tests run in milliseconds); Twilio retries only
what its URL's connection overrides ask (``#rc=1&rp=ct`` by default: one retry, on a connection
failure only).

The fault engine scripts them per send (endpoint ``"webhooks"`` of the provider): delayed, lost,
duplicated, out of order, or the message undeliverable (see :mod:`antifragile.sandbox._engine`).
What the sandbox decided for each send -- its statuses, its final status, its fate -- is kept
(:attr:`StatusWebhooks.deliveries`), as is every attempt to deliver a webhook
(:attr:`StatusWebhooks.attempts`), so that tests and the demo can count what was delivered.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urldefrag

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from antifragile.errors import ConfigurationError
from antifragile.sandbox._engine import WEBHOOKS, FaultEngine, ProviderFault

_log = logging.getLogger("antifragile.sandbox")

_DAY = 24 * 3600.0


def _doubling(first: float, total: float) -> tuple[float, ...]:
    delays: list[float] = []
    delay, spent = first, 0.0
    while spent + delay <= total:
        delays.append(delay)
        spent += delay
        delay *= 2
    return tuple(delays)


#: seconds between a failed delivery and the next attempt, per provider (before time_scale)
RETRY_DELAYS: Mapping[str, tuple[float, ...]] = {
    # Meta: exponential back-off for a bounded time (24 h per Meta's On-Prem docs; 7 days per
    # a BSP): doubling from 1 s within 24 h
    "whatsapp": _doubling(1.0, _DAY),
    # Twilio: connection overrides, default rc=1 (see _twilio_retries); the delay is ours
    "twilio": (1.0,),
    # SendGrid: "increasing intervals" for up to 24 h after the event: doubling from 10 s
    "sendgrid": _doubling(10.0, _DAY),
    # Resend (Svix): immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    "resend": (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
    # Cal.com: not documented; the sandbox retries like Svix's first steps
    "calcom": (5.0, 300.0, 1800.0),
    # Calendly: exponential back-off for 24 h, then the subscription is disabled (the first
    # delay is not documented): doubling from 1 min within 24 h
    "calendly": _doubling(60.0, _DAY),
    # Acuity: retries not documented; the sandbox retries like Svix's first steps
    "acuity": (5.0, 300.0, 1800.0),
    # HubSpot Webhooks API: up to 10 retries spread over 24 h: doubling from 1 min
    "hubspot": tuple(60.0 * 2**n for n in range(10)),
}


def _twilio_retries(url: str) -> tuple[str, int, bool]:
    """The URL to call (its fragment removed), the retry count and whether a non-2xx answer
    is retried, from Twilio's connection overrides (``#rc=0..5&rp=ct|all|...``)."""
    target, fragment = urldefrag(url)
    overrides = {k: v[-1] for k, v in parse_qs(fragment).items()}
    try:
        count = max(0, min(5, int(overrides.get("rc", "1"))))
    except ValueError:
        count = 1
    return target, count, overrides.get("rp", "ct") != "ct"


Signer = Callable[[bytes], dict[str, str]]


@dataclass(frozen=True, slots=True)
class Notice:
    """One status webhook to send: the status it reports, where, the exact body, and how to
    sign it (called at each attempt: a signature with a timestamp is made afresh).

    *render*, when given, makes the body of each attempt (HubSpot counts ``attemptNumber`` in
    it); *final_statuses* are answers never retried (HubSpot: 400, 401, 403, 404, 405)."""

    provider: str
    status: str
    message_id: str
    correlation: str | None
    url: str
    body: bytes
    content_type: str
    sign: Signer
    retry_delays: tuple[float, ...] = ()
    retry_on_status: bool = True
    render: Callable[[int], bytes] | None = None
    final_statuses: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST of a status webhook: its answer (``None``: no answer) and attempt number."""

    provider: str
    status: str
    message_id: str
    correlation: str | None
    url: str
    attempt: int
    answered: int | None
    copy: int
    at: float

    @property
    def ok(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "message_id": self.message_id,
            "correlation": self.correlation,
            "url": self.url,
            "attempt": self.attempt,
            "answered": self.answered,
            "copy": self.copy,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """What the sandbox decided for one accepted send: the statuses it reports (in the order
    they happened), the final one, the error code of a failure, and the fate of its webhooks
    (``"sent"``, ``"lost"``, ``"delayed"``, ``"duplicated"``, ``"out_of_order"``, or
    ``"no_callback"`` when nothing was configured to receive them)."""

    provider: str
    message_id: str
    correlation: str | None
    statuses: tuple[str, ...]
    fate: str
    error_code: int | None
    at: float

    @property
    def final(self) -> str:
        return self.statuses[-1] if self.statuses else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "message_id": self.message_id,
            "correlation": self.correlation,
            "statuses": list(self.statuses),
            "final": self.final,
            "fate": self.fate,
            "error_code": self.error_code,
            "at": self.at,
        }


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    notice: Notice = field(compare=False)
    attempt: int = field(compare=False, default=1)
    copy: int = field(compare=False, default=1)


class StatusWebhooks:
    """Schedules, signs, sends and retries simulators' status webhooks (module docs).

    *engine* holds the ``"webhooks"`` faults; *time_scale* multiplies every retry delay;
    *interval* seconds separate the statuses of one send; *timeout* bounds each POST.
    """

    def __init__(
        self,
        engine: FaultEngine,
        *,
        urls: Mapping[str, str] | None = None,
        time_scale: float = 1.0,
        interval: float = 0.02,
        timeout: float = 5.0,
    ) -> None:
        if not time_scale > 0 or not interval >= 0 or not timeout > 0:
            raise ConfigurationError("time_scale and timeout must be > 0, interval >= 0")
        self.engine = engine
        self.time_scale = float(time_scale)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self._urls: dict[str, str] = dict(urls or {})
        self._cond = threading.Condition()
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._busy = 0
        self._attempts: list[WebhookAttempt] = []
        self._deliveries: list[DeliveryStatus] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- configuration --------------------------------------------------------------------------

    def configure(self, provider: str, url: str | None) -> None:
        """Send *provider*'s status webhooks to *url* (``None``: stop sending them)."""
        with self._cond:
            if url:
                self._urls[provider] = url
            else:
                self._urls.pop(provider, None)

    def url(self, provider: str) -> str | None:
        with self._cond:
            return self._urls.get(provider)

    @property
    def urls(self) -> dict[str, str]:
        with self._cond:
            return dict(self._urls)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="antifragile-sandbox-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop sending (webhooks still pending are dropped)."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def reset(self) -> None:
        """Drop pending webhooks and forget attempts and deliveries."""
        with self._cond:
            self._heap.clear()
            self._attempts.clear()
            self._deliveries.clear()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no webhook is pending or in flight (``False`` when *timeout* passed
        first). Retries scheduled far ahead count as pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- records --------------------------------------------------------------------------------

    @property
    def attempts(self) -> list[WebhookAttempt]:
        with self._cond:
            return list(self._attempts)

    def deliveries(self, provider: str | None = None) -> list[DeliveryStatus]:
        with self._cond:
            return [d for d in self._deliveries if provider is None or d.provider == provider]

    # -- emitting -------------------------------------------------------------------------------

    def decide(self, provider: str) -> ProviderFault | None:
        """The scripted fault for the status webhooks of *provider*'s next send, if any."""
        fault, _ = self.engine.pick(provider, WEBHOOKS)
        return fault

    def emit(
        self,
        provider: str,
        message_id: str,
        correlation: str | None,
        notices: Sequence[Notice],
        *,
        statuses: Sequence[str] = (),
        fault: ProviderFault | None = None,
        error_code: int | None = None,
    ) -> DeliveryStatus:
        """Record the fate of a send and schedule its *notices* under *fault*."""
        fate = "sent" if notices else "no_callback"
        if notices and fault is not None and fault.kind != "undeliverable":
            fate = {"lost": "lost", "delayed": "delayed", "duplicated": "duplicated"}.get(
                fault.kind, "out_of_order"
            )
        decided = DeliveryStatus(
            provider,
            message_id,
            correlation,
            tuple(statuses or (n.status for n in notices)),
            fate,
            error_code,
            time.time(),
        )
        ordered = list(notices)
        if fate == "out_of_order":
            ordered.reverse()
        delay = fault.seconds if fault is not None and fault.kind == "delayed" else 0.0
        now = time.monotonic()
        with self._cond:
            self._deliveries.append(decided)
            if fate != "lost":
                for i, notice in enumerate(ordered):
                    due = now + delay + i * self.interval
                    self._push(_Job(due, next(self._seq), notice))
                    if fate == "duplicated":
                        self._push(_Job(due + self.interval / 2, next(self._seq), notice, copy=2))
        return decided

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, job)
        self._cond.notify_all()

    # -- the sending thread ---------------------------------------------------------------------

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                with self._cond:
                    while not self._stopping:
                        if self._heap and self._heap[0].due <= time.monotonic():
                            break
                        wait = self._heap[0].due - time.monotonic() if self._heap else None
                        self._cond.wait(wait)
                    if self._stopping:
                        return
                    job = heapq.heappop(self._heap)
                    self._busy += 1
                try:
                    self._deliver(client, job)
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()

    def _deliver(self, client: httpx.Client, job: _Job) -> None:
        notice = job.notice
        body = notice.body if notice.render is None else notice.render(job.attempt - 1)
        headers = {"content-type": notice.content_type, **notice.sign(body)}
        answered: int | None
        try:
            response = client.post(notice.url, content=body, headers=headers)
            answered = response.status_code
        except httpx.HTTPError as exc:
            _log.info("status webhook to %s not answered: %s", notice.url, type(exc).__name__)
            answered = None
        attempt = WebhookAttempt(
            notice.provider,
            notice.status,
            notice.message_id,
            notice.correlation,
            notice.url,
            job.attempt,
            answered,
            job.copy,
            time.time(),
        )
        retry = not attempt.ok and (
            answered is None or (notice.retry_on_status and answered not in notice.final_statuses)
        )
        with self._cond:
            self._attempts.append(attempt)
            if retry and job.attempt <= len(notice.retry_delays):
                delay = notice.retry_delays[job.attempt - 1] * self.time_scale
                self._push(
                    _Job(
                        time.monotonic() + delay,
                        next(self._seq),
                        notice,
                        job.attempt + 1,
                        job.copy,
                    )
                )


def twilio_notice_target(url: str) -> tuple[str, tuple[float, ...], bool]:
    """The URL Twilio calls for a ``StatusCallback`` *url*, its retry delays and whether it
    retries non-2xx answers (from the URL's connection overrides)."""
    target, count, on_status = _twilio_retries(url)
    delays = RETRY_DELAYS["twilio"] * count if count else ()
    return target, delays[:count], on_status


# -- signing ------------------------------------------------------------------------------------


def svix_secret() -> str:
    """A fresh Svix signing secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def svix_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")>``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def calcom_signature(secret: str | None, body: bytes) -> str:
    """Cal.com's ``X-Cal-Signature-256``: hex HMAC-SHA256 of the body, or the literal
    ``no-secret-provided`` when the webhook has no secret."""
    if not secret:
        return "no-secret-provided"
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventWebhookKey:
    """The ECDSA P-256 key pair SendGrid signs its Event Webhook with: the sandbox makes one;
    :attr:`public_key` (base64 DER SubjectPublicKeyInfo) is what a receiver is configured with."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        """base64 DER ECDSA-SHA256 signature of ``timestamp + body``."""
        signature = self._private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {
            "x-twilio-email-event-webhook-signature": self.sign(timestamp, body),
            "x-twilio-email-event-webhook-timestamp": timestamp,
        }


def hubspot_signature(
    client_secret: str, method: str, uri: str, body: bytes, timestamp: str
) -> str:
    """HubSpot's ``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of ``method + uri + body +
    timestamp`` with the app's client secret."""
    source = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()
