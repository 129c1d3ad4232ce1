"""WhatsApp Cloud API: send text and template messages without ever sending one twice blindly.

::

    async with WhatsAppConnector() as whatsapp:     # ANTIFRAGILE_WHATSAPP_* from the environment
        sent = await whatsapp.send_text("15551234567", "Your order has shipped.")
        sent.id                                       # "wamid...."

**Configuration.** ``ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN`` holds the access token (system-user
token), ``ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID`` the sending number's id and
``ANTIFRAGILE_WHATSAPP_BASE_URL`` the API's address (``https://graph.facebook.com`` when unset;
point it at ``{sandbox.url}/whatsapp``). ``api_version`` (``v21.0`` by default) is the Graph
version in the path. Arguments to :class:`WhatsAppConnector` override all of them.

**Limits.** A text body is at most 4096 characters (checked before sending:
:class:`~antifragile.ConfigurationError`). Cloud API sends 80 messages per second per phone
number by default (more when upgraded) and about one message every 6 seconds to the same
recipient.

**Errors.** Cloud API signals throttling with Graph error *codes* in a 400 answer, not with 429:
``130429`` (throughput), ``131056`` (pair rate), ``80007`` (account) and ``4`` (app-level
Graph throttle) are raised as :class:`~antifragile.RateLimitedError` (``retry_after`` 6 s for
``131056``), whatever the HTTP status; ``131048`` (spam rate limit) is a quality-policy block
and stays an :class:`~antifragile.InvalidRequestError`. Other 400s are
:class:`~antifragile.InvalidRequestError`, 401/403 :class:`~antifragile.AuthenticationError`;
the Graph ``code`` and ``error_data.details`` are added to the error's message.

**Default policy** (:func:`whatsapp_policy`): up to 5 attempts, exponential back-off from 1 s
(capped at 30 s, full jitter), 10 s per attempt, 60 s per call, a circuit breaker.

**Exactly once -- or flagged.** ``/messages`` has no idempotency key: a request sent twice is a
message sent twice. So the connector retries only what certainly did not send -- a connection
that was never made, a throttling refusal -- and raises
:class:`~antifragile.connectors.DeliveryUnknownError` (not retryable: a durable job stops on
it) when the message *may* have gone out: the connection dropped or timed out after the request
was written, a 5xx, or a 200 without a ``wamid``. Reconcile those from the ``statuses``
webhooks (a ``sent``/``delivered`` status for the recipient) before sending again.

**Correlation.** Every message carries ``biz_opaque_callback_data`` =
:func:`~antifragile.connectors.correlation_for` of its *reference* (the caller's key for it: a
job's idempotency key; a random one when not given), which Cloud API echoes in each of its
``statuses[]`` webhooks. The result and a :class:`DeliveryUnknownError` carry the reference
(``reconcile_key``), so whoever waits for the echo knows what to look for.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import correlation_for
from antifragile.connectors._messaging import (
    DeliveryUnknownError,
    messaging_policy,
    send_once,
    transport_policy,
)
from antifragile.connectors._outcome import graph_error_answer
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    PermanentError,
    RateLimitedError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Policy

BASE_URL_ENV = "ANTIFRAGILE_WHATSAPP_BASE_URL"
ACCESS_TOKEN_ENV = "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN"
PHONE_NUMBER_ID_ENV = "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID"
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
PROVIDER = "whatsapp"

#: the operation names in errors and events
SEND_TEXT = "send_text"
SEND_TEMPLATE = "send_template"
SEND_INTERACTIVE = "send_interactive"
SEND_MEDIA = "send_media"
MARK_READ = "mark_read"
GET_MEDIA = "get_media"
DOWNLOAD_MEDIA = "download_media"

#: the media types a message may carry by link or id, and those that take a caption
MEDIA_KINDS = frozenset({"image", "document", "audio", "video", "sticker"})
CAPTIONED = frozenset({"image", "document", "video"})
MAX_CAPTION = 1024

#: the longest text body Cloud API accepts
MAX_TEXT = 4096

#: reply buttons: at most 3, each title at most 20 characters, each id at most 256
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
#: list messages: at most 10 rows, each title at most 24 characters, description 72, id 200
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
#: the body of an interactive message, and the list's menu button label
MAX_INTERACTIVE_BODY = 1024
MAX_LIST_BUTTON = 20

#: the customer-service window: free-form messages only within 24 hours of the contact's last
CUSTOMER_SERVICE_WINDOW = 24 * 3600.0
#: the Graph code of a free-form message outside that window ("Re-engagement message")
OUTSIDE_WINDOW = 131047

#: Graph error codes that are throttling refusals (the message was not sent)
THROTTLING_CODES: frozenset[int] = frozenset({4, 80007, 130429, 131056})
#: the pair rate limit allows about one message every 6 seconds to the same recipient
PAIR_RATE_WAIT = 6.0


def whatsapp_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`WhatsAppConnector` (see the module docs)."""
    return messaging_policy(PROVIDER, clock=clock, timeout=timeout)


@dataclass(frozen=True, slots=True)
class SentWhatsApp:
    """Cloud API accepted the message: its ``wamid`` and the recipient's ``wa_id``.

    Accepted is not delivered: delivery arrives later in ``statuses`` webhooks, which echo
    ``correlation`` (:func:`~antifragile.connectors.correlation_for` of ``reference``).
    """

    id: str
    wa_id: str | None
    to: str
    reference: str | None = None
    correlation: str | None = None


@dataclass(frozen=True, slots=True)
class WhatsAppTemplate:
    """An approved message template: its *name*, *language* code and the text *parameters*
    of its body, in order (``{{1}}``, ``{{2}}``...)."""

    name: str
    language: str = "en_US"
    parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError("a WhatsApp template needs a name")
        if not isinstance(self.language, str) or not self.language.strip():
            raise ConfigurationError("a WhatsApp template needs a language code")

    def components(self) -> list[dict[str, Any]]:
        """The ``components`` of a template send: the body's text parameters."""
        if not self.parameters:
            return []
        parameters = [{"type": "text", "text": value} for value in self.parameters]
        return [{"type": "body", "parameters": parameters}]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "parameters": list(self.parameters)}

    @classmethod
    def from_json(cls, data: Any) -> WhatsAppTemplate:
        return cls(str(data["name"]), str(data["language"]), tuple(map(str, data["parameters"])))


@dataclass(frozen=True, slots=True)
class WhatsAppMedia:
    """A medium downloaded through the media endpoint: its *id*, bytes, MIME type, the SHA-256
    Cloud API gave for it (checked) and its size."""

    id: str
    content: bytes
    mime_type: str | None
    sha256: str | None

    @property
    def size(self) -> int:
        return len(self.content)


def _size(value: Any) -> int | None:
    """A medium's ``file_size`` (Cloud API sends it as a string) as a number, if it is one."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() else None


def outside_window(error: BaseException) -> bool:
    """Whether *error* is Cloud API refusing a free-form message outside the customer-service
    window (Graph code ``131047``): not sent, and not sendable as it is until the contact
    writes again -- only a template is."""
    if not isinstance(error, IntegrationError) or isinstance(error, RateLimitedError):
        return False
    return graph_error(error.detail)[0] == OUTSIDE_WINDOW


def graph_error(detail: str | None) -> tuple[int | None, str | None, str | None]:
    """The Graph error's ``code``, ``message`` and ``error_data.details`` from a body excerpt."""
    if not detail:
        return None, None, None
    try:
        body = json.loads(detail)
    except ValueError:
        return None, None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    code, message = error.get("code"), error.get("message")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
        details if isinstance(details, str) else None,
    )


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def interactive_choice(
    body: str,
    options: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    list_button: str = "Choose",
) -> dict[str, Any] | None:
    """The ``interactive`` message asking to pick one of *options* (see
    :meth:`WhatsAppConnector.send_choice`), or ``None`` when they fit neither reply buttons
    nor a list message. Empty or repeated options, or *ids* of another length, raise
    :class:`~antifragile.ConfigurationError`."""
    labels = [" ".join(option.split()) for option in options]
    keys = list(ids) if ids is not None else [str(i) for i in range(1, len(labels) + 1)]
    if not labels or not all(labels) or len(set(labels)) != len(labels):
        raise ConfigurationError("a choice needs distinct, non-empty options")
    if len(keys) != len(labels) or len(set(keys)) != len(keys) or not all(keys):
        raise ConfigurationError("a choice needs one distinct, non-empty id per option")
    if not body.strip() or len(body) > MAX_INTERACTIVE_BODY:
        return None
    if len(labels) <= MAX_BUTTONS and all(len(t) <= MAX_BUTTON_TITLE for t in labels):
        if any(len(k) > MAX_BUTTON_ID for k in keys):
            return None
        buttons = [
            {"type": "reply", "reply": {"id": key, "title": title}}
            for key, title in zip(keys, labels, strict=True)
        ]
        action: dict[str, Any] = {"buttons": buttons}
        kind = "button"
    else:
        titles = [_shortened(t, MAX_ROW_TITLE) for t in labels]
        if (
            len(labels) > MAX_ROWS
            or len(set(titles)) != len(titles)
            or any(len(k) > MAX_ROW_ID for k in keys)
        ):
            return None
        rows: list[dict[str, Any]] = []
        for key, title, label in zip(keys, titles, labels, strict=True):
            row = {"id": key, "title": title}
            if title != label:
                row["description"] = _shortened(label, MAX_ROW_DESCRIPTION)
            rows.append(row)
        button = _shortened(" ".join(list_button.split()) or "Choose", MAX_LIST_BUTTON)
        action = {"button": button, "sections": [{"rows": rows}]}
        kind = "list"
    return {
        "type": "interactive",
        "interactive": {"type": kind, "body": {"text": body}, "action": action},
    }


def _mapped(error: IntegrationError) -> IntegrationError:
    """*error* with the Graph code and details; a throttling code made a RateLimitedError."""
    code, message, details = graph_error(error.detail)
    if code is None:
        return error
    text = redact(
        f"{error.message}: code {code}"
        + (f": {message}" if message else "")
        + (f" ({details})" if details and details != message else "")
    )
    if code in THROTTLING_CODES and not isinstance(error, RateLimitedError):
        return RateLimitedError(
            text,
            retry_after=PAIR_RATE_WAIT if code == 131056 else None,
            provider=error.provider,
            operation=error.operation,
            status=error.status,
            request_id=error.request_id,
            replay_safe=True,  # a refusal: Cloud API did not send the message
            attempts=error.attempts,
            detail=error.detail,
        )
    error.message = text
    error.args = (text,)
    return error


class WhatsAppConnector(HTTPConnector):
    """WhatsApp Cloud API's send-message endpoint (see the module docs).

    *access_token*, *phone_number_id* and *base_url* default to the ``ANTIFRAGILE_WHATSAPP_*``
    environment variables; *policy* to :func:`whatsapp_policy` on *clock* with *timeout*
    seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        access_token: str | None = None,
        *,
        phone_number_id: str | None = None,
        base_url: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        token = required_from(
            access_token,
            ACCESS_TOKEN_ENV,
            needs="WhatsApp needs an access token",
            arg="access_token",
        )
        number = required_from(
            phone_number_id,
            PHONE_NUMBER_ID_ENV,
            needs="WhatsApp needs the sending phone number id",
            arg="phone_number_id",
        )
        self.phone_number_id = number
        self.clock = clock
        self.api_version = api_version.strip("/")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = (
            policy if policy is not None else whatsapp_policy(clock=clock, timeout=timeout)
        )
        self._auth = {"authorization": f"Bearer {token}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=transport_policy(PROVIDER, clock=clock, timeout=timeout),
            timeout=timeout,
            client=client,
            secrets=[token],
            not_processed=graph_error_answer,
        )

    @masks_pii("to")
    async def send_text(
        self,
        to: str,
        body: str,
        *,
        preview_url: bool = False,
        reply_to: str | None = None,
        reference: str | None = None,
    ) -> SentWhatsApp:
        """Send a text message to *to* (E.164 digits or a ``wa_id``); *reply_to* a ``wamid``;
        *reference* the caller's key for it (its correlation is echoed in status webhooks).

        Raises :class:`~antifragile.connectors.DeliveryUnknownError` when the message may have
        been sent (never sent again), else an :class:`~antifragile.IntegrationError` subclass
        when Cloud API does not accept it (see the module docs).
        """
        if not body:
            raise ConfigurationError("a WhatsApp text message needs a body")
        if len(body) > MAX_TEXT:
            raise ConfigurationError(
                f"a WhatsApp text body is at most {MAX_TEXT} characters (got {len(body)})"
            )
        message: dict[str, Any] = {
            "type": "text",
            "text": {"body": body, "preview_url": preview_url},
        }
        if reply_to is not None:
            message["context"] = {"message_id": reply_to}
        return await self._send(to, message, SEND_TEXT, reference)

    @masks_pii("to")
    async def send_template(
        self,
        to: str,
        name: str,
        *,
        language: str = "en_US",
        components: list[dict[str, Any]] | None = None,
        reference: str | None = None,
    ) -> SentWhatsApp:
        """Send the approved template *name* in *language* (with its *components*) to *to*;
        *reference* as for :meth:`send_text`."""
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:
            template["components"] = components
        return await self._send(
            to, {"type": "template", "template": template}, SEND_TEMPLATE, reference
        )

    @masks_pii("to")
    async def send_choice(
        self,
        to: str,
        body: str,
        options: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        list_button: str = "Choose",
        reference: str | None = None,
    ) -> SentWhatsApp:
        """Ask *to* to pick one of *options*: reply buttons when there are at most 3 whose
        labels fit in 20 characters, else a list message (at most 10 rows; a label over 24
        characters is shortened and given in full as the row's description), else -- more
        than 10 options, or a body over 1024 characters -- a text with the options numbered.

        *ids* (default ``"1"``, ``"2"``...) come back in the contact's ``button_reply`` /
        ``list_reply``; *list_button* labels the list's menu (at most 20 characters).
        *reference* as for :meth:`send_text`.
        """
        message = interactive_choice(body, options, ids=ids, list_button=list_button)
        if message is None:
            numbered = "\n".join(f"{i}. {option}" for i, option in enumerate(options, 1))
            return await self.send_text(to, f"{body}\n\n{numbered}", reference=reference)
        return await self._send(to, message, SEND_INTERACTIVE, reference)

    @masks_pii("to")
    async def send_media(
        self,
        to: str,
        kind: str,
        *,
        link: str | None = None,
        media_id: str | None = None,
        caption: str | None = None,
        filename: str | None = None,
        reference: str | None = None,
    ) -> SentWhatsApp:
        """Send an ``image``, ``document``, ``audio``, ``video`` or ``sticker`` to *to* by its
        public https *link* or an uploaded *media_id* (exactly one); *caption* (at most 1024
        characters; image, document, video) and *filename* (document) as Cloud API takes them.
        *reference* as for :meth:`send_text`."""
        if kind not in MEDIA_KINDS:
            raise ConfigurationError(f"a WhatsApp media message is one of {sorted(MEDIA_KINDS)}")
        if (link is None) == (media_id is None):
            raise ConfigurationError("a WhatsApp media message needs a link or a media id")
        if link is not None and not link.startswith(("https://", "http://")):
            raise ConfigurationError("a WhatsApp media link is an http(s) URL")
        media: dict[str, Any] = {"link": link} if link is not None else {"id": media_id}
        if caption is not None:
            if kind not in CAPTIONED or len(caption) > MAX_CAPTION:
                raise ConfigurationError(
                    f"a caption goes with an image, document or video, at most {MAX_CAPTION} "
                    "characters"
                )
            media["caption"] = caption
        if filename is not None:
            if kind != "document":
                raise ConfigurationError("only a document has a filename")
            media["filename"] = filename
        return await self._send(to, {"type": kind, kind: media}, SEND_MEDIA, reference)

    async def mark_read(self, message_id: str, *, typing: bool = False) -> None:
        """Mark the contact's message *message_id* (a ``wamid``) read -- blue ticks, and every
        earlier message of the conversation with it -- and, with *typing*, show the typing
        indicator (until the reply, or 25 seconds). Repeating it is harmless."""
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing:
            body["typing_indicator"] = {"type": "text"}
        path = f"/{self.api_version}/{self.phone_number_id}/messages"

        async def attempt() -> None:
            await self.client.post(
                path, json=body, headers=self._auth, operation=MARK_READ, replay_safe=True
            )

        await self.policy.arun(attempt, operation=MARK_READ, replay_safe=True)

    async def download_media(self, media_id: str, *, max_bytes: int | None = None) -> WhatsAppMedia:
        """Download the medium *media_id* of an inbound message (ids from webhooks live 7 days):
        ``GET /{version}/{media_id}`` for its short-lived URL, then that URL with the same
        token; the bytes are checked against the ``sha256`` Cloud API gives.

        With *max_bytes*, a medium whose ``file_size`` is larger is refused before it is
        downloaded (and one that turns out larger, after): a :class:`~antifragile.PermanentError`
        (not retried)."""

        def too_large(size: int, operation: str) -> PermanentError:
            return PermanentError(
                f"the medium is {size} bytes, over the limit of {max_bytes}",
                provider=PROVIDER,
                operation=operation,
            )

        async def attempt() -> WhatsAppMedia:
            info = await self.client.get(
                f"/{self.api_version}/{media_id}",
                params={"phone_number_id": self.phone_number_id},
                headers=self._auth,
                operation=GET_MEDIA,
                replay_safe=True,
            )
            answer = info.json() if info.content else {}
            url = answer.get("url") if isinstance(answer, dict) else None
            if not isinstance(url, str) or not url:
                raise UpstreamUnavailableError(
                    "WhatsApp answered the media lookup without a URL",
                    provider=PROVIDER,
                    operation=GET_MEDIA,
                    status=info.status_code,
                )
            announced = _size(answer.get("file_size"))
            if max_bytes is not None and announced is not None and announced > max_bytes:
                raise too_large(announced, GET_MEDIA)
            got = await self.client.get(
                url, headers=self._auth, operation=DOWNLOAD_MEDIA, replay_safe=True
            )
            if max_bytes is not None and len(got.content) > max_bytes:
                raise too_large(len(got.content), DOWNLOAD_MEDIA)
            digest = answer.get("sha256")
            if isinstance(digest, str) and hashlib.sha256(got.content).hexdigest() != digest:
                raise UpstreamUnavailableError(
                    "the downloaded medium does not match its sha256",
                    provider=PROVIDER,
                    operation=DOWNLOAD_MEDIA,
                    status=got.status_code,
                )
            mime = answer.get("mime_type")
            return WhatsAppMedia(
                media_id,
                got.content,
                mime if isinstance(mime, str) else None,
                digest if isinstance(digest, str) else None,
            )

        return await self.policy.arun(attempt, operation=DOWNLOAD_MEDIA, replay_safe=True)

    async def send_within_window(
        self,
        to: str,
        body: str,
        template: WhatsAppTemplate | None,
        *,
        last_inbound: float | None = None,
        template_only: bool = False,
        options: Sequence[str] = (),
        ids: Sequence[str] | None = None,
        reference: str | None = None,
    ) -> SentWhatsApp:
        """Send *body* (a choice of *options* when given) as a free-form message while the
        customer-service window is open, else *template*.

        The window is open for 24 hours after the contact's last message, *last_inbound*
        (epoch seconds, by the connector's clock). Known to be closed -- or *template_only*
        (a nudge) -- *template* is sent straight away; open or unknown, the free-form message
        is tried, and when Cloud API refuses it with ``131047`` (the window closed after all)
        *template* is sent instead, under the same *reference*. Without a *template* this is
        :meth:`send_text` / :meth:`send_choice`.
        """
        closed = last_inbound is not None and (
            self.clock.time() - last_inbound >= CUSTOMER_SERVICE_WINDOW
        )
        if template is not None and (template_only or closed):
            return await self._template(to, template, reference)
        try:
            if options:
                return await self.send_choice(to, body, options, ids=ids, reference=reference)
            return await self.send_text(to, body, reference=reference)
        except IntegrationError as exc:
            if template is None or not outside_window(exc):
                raise
        return await self._template(to, template, reference)

    async def _template(
        self, to: str, template: WhatsAppTemplate, reference: str | None
    ) -> SentWhatsApp:
        return await self.send_template(
            to,
            template.name,
            language=template.language,
            components=template.components(),
            reference=reference,
        )

    async def _send(
        self, to: str, message: dict[str, Any], operation: str, reference: str | None
    ) -> SentWhatsApp:
        reference = reference or str(uuid.uuid4())
        correlation = correlation_for(reference)
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            **message,
            "biz_opaque_callback_data": correlation,
        }
        path = f"/{self.api_version}/{self.phone_number_id}/messages"

        async def attempt() -> SentWhatsApp:
            try:
                response = await self.client.post(
                    path, json=payload, headers=self._auth, operation=operation
                )
            except IntegrationError as exc:
                mapped = _mapped(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            return self._accepted(response, to, operation, reference)

        sent = await send_once(
            self.policy,
            attempt,
            provider=PROVIDER,
            operation=operation,
            to=to,
            fields=payload,
            reconcile_key=reference,
        )
        return SentWhatsApp(sent.id, sent.wa_id, sent.to, reference, correlation)

    def _accepted(
        self, response: httpx.Response, to: str, operation: str, reference: str
    ) -> SentWhatsApp:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        messages = answer.get("messages") if isinstance(answer, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise DeliveryUnknownError(
                "WhatsApp answered 200 without a message id (malformed body): the message "
                "may have been sent; not sent again",
                provider=PROVIDER,
                operation=operation,
                status=response.status_code,
                request_id=response.request.headers.get("x-request-id"),
                detail=response.text[:500],
                to=to,
                reconcile_key=reference,
            )
        contacts = answer.get("contacts") if isinstance(answer, dict) else None
        contact = contacts[0] if isinstance(contacts, list) and contacts else None
        wa_id = contact.get("wa_id") if isinstance(contact, dict) else None
        return SentWhatsApp(wamid, wa_id if isinstance(wa_id, str) else None, to)

    def __repr__(self) -> str:
        return (
            f"WhatsAppConnector(base_url={self.base_url!r}, "
            f"phone_number_id={self.phone_number_id!r})"
        )
