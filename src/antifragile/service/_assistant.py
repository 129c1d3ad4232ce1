"""The assistant: every part of the service, built from one :class:`Settings`.

The composition root the FastAPI app, ``antifragile serve``, ``antifragile worker`` and
``antifragile scheduler`` share -- so a worker process declares exactly the jobs the API process
enqueues::

    assistant = Assistant(Settings.from_env())
    await assistant.open()
    recorded = await assistant.ingest(events, request_id=rid)   # inbox + one job per new event
    worker = assistant.worker(concurrency=8)                     # processes them

Users extend it before opening it: ``@assistant.on_message(intent=...)`` registers an intent
handler, ``@assistant.action(name)`` an action -- which handlers and flows' ``on_complete``
alike may name: one registry for the pipeline's sagas and the flows' completions --,
``@assistant.on_event(topic)`` a Shopify topic handler, ``@assistant.on_delivery_status`` a hook
on the providers' delivery statuses, ``@assistant.job(...)`` / ``@assistant.every(...)`` their
own jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypedDict, TypeVar, Unpack, overload

from antifragile.connectors import PROVIDERS, Connectors, parse_overrides, policies_for
from antifragile.connectors._failover import chain_from
from antifragile.errors import ConfigurationError, StoreUnavailableError
from antifragile.inbound import (
    Actions,
    BookingStatuses,
    Classifier,
    DeliveryHook,
    DeliveryStatuses,
    EventKind,
    FeatureFlags,
    Flow,
    Handlers,
    InboundEvent,
    KeywordClassifier,
    LLMIntentClassifier,
    LLMIntentConfig,
    Replies,
    Sessions,
    Tasks,
    Tenant,
    TenantClassifiers,
    flows_from_mapping,
)
from antifragile.inbound._actions import ActionFunction, Applies, OnUnknown
from antifragile.inbound._alerts import Alerts
from antifragile.inbound._echo import Echoes
from antifragile.inbound._handlers import HandlerFunction
from antifragile.inbound._media import MediaDownloads, MediaHook
from antifragile.inbound._pipeline import (
    PROCESS_JOB,
    CommerceHandler,
    MessagePipeline,
    PipelineResult,
    SenderLimiter,
    resolve_tenant,
    sender_ordering_key,
)
from antifragile.jobs import (
    DEFAULT_JOB_RETRY,
    JobContext,
    JobFunction,
    Jobs,
    NewInboxEntry,
    Recorded,
    Retention,
    Scheduler,
    Worker,
    new_job_id,
)
from antifragile.observability import current_request_id, request_context, span
from antifragile.policies import (
    SYSTEM_CLOCK,
    CircuitBreaker,
    Clock,
    Exponential,
    Policy,
    Retry,
)
from antifragile.service._alerts_api import alert_config
from antifragile.service._checks import check_tenant_email, check_tenants
from antifragile.service._limits import InboundLimits
from antifragile.service._metrics import metrics_for, observe_connectors
from antifragile.service._settings import Settings
from antifragile.stores import Store, open_store

_log = logging.getLogger("antifragile.service")

_Hook = TypeVar("_Hook", bound=DeliveryHook)
_Handler = TypeVar("_Handler", bound=HandlerFunction)
_Action = TypeVar("_Action", bound=ActionFunction)
_Commerce = TypeVar("_Commerce", bound=CommerceHandler)
_P = ParamSpec("_P")
_R = TypeVar("_R")

if TYPE_CHECKING:
    from antifragile.jobs import Schedule, SchedulerOptions, WorkerOptions
    from antifragile.jobs._cron import CatchUp


class _JobOptions(TypedDict, total=False):
    """The keyword options of ``Jobs.job`` (see :meth:`antifragile.jobs.Jobs.job`)."""

    queue: str
    retry: Retry
    timeout: float | None
    priority: int
    provider: str | None
    payload_version: int


class _ScheduleOptions(TypedDict, total=False):
    """The keyword options of ``Jobs.every`` (see :meth:`antifragile.jobs.Jobs.every`)."""

    name: str | None
    queue: str
    catch_up: CatchUp
    timezone: str
    retry: Retry
    timeout: float | None
    priority: int
    provider: str | None
    max_catch_up: int


def tenant_classifiers(
    settings: Settings, *, metrics: Any = None, clock: Clock = SYSTEM_CLOCK
) -> Classifier:
    """The intent classifier of the service: an :class:`~antifragile.inbound.LLMIntentClassifier`
    for each tenant with an ``llm`` table (its key read from the environment now, so a missing
    one stops the start), the keyword classifier for the others -- or the keyword classifier
    alone when no tenant has a model."""
    if not settings.tenant_llm:
        return KeywordClassifier()
    models: dict[str, Classifier] = {}
    for tenant_id, table in settings.tenant_llm.items():
        try:
            config = LLMIntentConfig.from_mapping(table, env=os.environ)
        except ConfigurationError as exc:
            raise ConfigurationError(f"tenant {tenant_id!r} llm: {exc.message}") from None
        models[tenant_id] = LLMIntentClassifier(
            config, tenant=tenant_id, metrics=metrics, clock=clock
        )
    return TenantClassifiers(models, default=KeywordClassifier())


def state_store_url(settings: Settings) -> str:
    """Where the state shared by every process (breakers, inbound limits) lives: the Redis
    store when ``redis_url`` is set, else the job database."""
    return settings.redis_url or settings.database_url


#: how the processing of one inbound event is retried: quickly, since a person is waiting
PROCESS_RETRY = Retry(attempts=5, backoff=Exponential(1.0, multiplier=2.0, cap=60.0))

#: how long opening the Redis store may take before the service starts without it (seconds)
REDIS_OPEN_TIMEOUT = 5.0

#: the queue of the inbound events' processing jobs (each sender's one at a time, in order)
INBOUND_QUEUE = "inbound"

#: the default tenant of a single-business install (no tenants configured)
DEFAULT_TENANT = Tenant(id="default", name="default")


class Assistant:
    """Every part of the service, built from *settings*; see the module docs."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        connectors: Connectors | None = None,
        jobs: Jobs | None = None,
        classifier: Classifier | None = None,
        limiter: SenderLimiter | None = None,
        integration_retry: Retry | None = None,
        policies: Mapping[str, Policy] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.clock = clock
        self.started_at = time.time()
        self.jobs = (
            jobs if jobs is not None else Jobs(database_url=self.settings.database_url, clock=clock)
        )
        self.connectors = (
            connectors
            if connectors is not None
            else Connectors(
                clock=clock,
                policies={
                    **policies_for(parse_overrides(self.settings.providers), clock=clock),
                    **(policies or {}),
                },
            )
        )
        self._owns_connectors = connectors is None
        self.metrics = metrics_for(self.jobs, clock=clock)  # Prometheus: GET /metrics
        self.tenants: list[Tenant] = list(self.settings.tenant_list()) or [DEFAULT_TENANT]
        self.flows: dict[str, Flow] = flows_from_mapping(self.settings.flows)
        check_tenants(self.tenants, self.flows)  # a misspelt flow stops the start, not intake
        check_tenant_email(self.tenants)  # so does a tenant's misspelt email chain
        if isinstance(self.connectors, Connectors):
            self.connectors.tenant_email_chains = [
                chain_from(t.email_chain) for t in self.tenants if t.email_chain
            ]
        self.classifier: Classifier = (
            classifier
            if classifier is not None
            else tenant_classifiers(self.settings, metrics=self.metrics, clock=clock)
        )
        self.handlers = Handlers()
        self.handlers.register_defaults()
        self.flags = FeatureFlags(self.jobs, clock=clock, defaults=self.settings.features)
        self.alerts = Alerts(
            self.jobs, self.connectors, config=alert_config(self.settings), clock=clock
        )
        self.tasks = Tasks(self.jobs, clock=clock)
        tenants_by_id = {tenant.id: tenant for tenant in self.tenants}
        self.actions = Actions(self.connectors, tasks=self.tasks, tenants=tenants_by_id)
        #: records the providers' delivery statuses on the outbound messages
        self.deliveries = DeliveryStatuses(self.jobs, clock=clock)
        self.actions.echoes = Echoes(self.deliveries)  # unknown outcomes wait for statuses
        self.replies = Replies(
            self.jobs, self.connectors, clock=clock, deliveries=self.deliveries, tasks=self.tasks
        )
        self.actions.replies = self.replies  # book_call sends links and confirmations
        #: settles sessions' booking_status from the scheduling providers' webhooks
        self.bookings = BookingStatuses(self.deliveries)
        self.sessions = Sessions(
            self.jobs,
            self.connectors,
            self.flows,
            tenants=tenants_by_id,
            replies=self.replies,
            actions=self.actions,
            flags=self.flags,
            clock=clock,
            retry=integration_retry if integration_retry is not None else DEFAULT_JOB_RETRY,
        )
        #: the inbound rate limits (per client IP, per sender), given or built from the
        #: settings; :meth:`open` shares their per-sender buckets through :attr:`state_store`
        self.limits: InboundLimits | None = (
            limiter
            if isinstance(limiter, InboundLimits)
            else InboundLimits.from_settings(self.settings, clock=clock)
            if limiter is None
            else None
        )
        #: the store holding the state every process shares -- the breakers and the inbound
        #: limits: Redis when ``settings.redis_url`` is set, else the job database's store
        #: (``None`` before :meth:`open`, and while a configured Redis could not be opened)
        self.state_store: Store | None = None
        self._owned_store: Store | None = None
        self._wired_limits = False
        #: downloads the WhatsApp media of tenants with ``whatsapp_media_download = "on"``
        #: into ``settings.whatsapp_media_dir`` (or to :meth:`on_whatsapp_media`'s hook)
        self.media = MediaDownloads(
            self.jobs,
            self.connectors,
            directory=self.settings.whatsapp_media_dir,
            max_bytes=self.settings.whatsapp_media_max_bytes,
            tenants=self.tenants,
        )
        self.pipeline = MessagePipeline(
            self.jobs,
            tenants=self.tenants,
            classifier=self.classifier,
            handlers=self.handlers,
            actions=self.actions,
            sessions=self.sessions,
            replies=self.replies,
            tasks=self.tasks,
            connectors=self.connectors,
            limiter=limiter if limiter is not None else self.limits,
            clock=clock,
            deliveries=self.deliveries,
            media=self.media,
        )
        pipeline = self.pipeline

        @self.jobs.job(name=PROCESS_JOB, queue=INBOUND_QUEUE, retry=PROCESS_RETRY, timeout=60.0)
        async def process(ctx: JobContext, inbox_id: str) -> dict[str, Any]:
            with span("inbound.pipeline", attributes={"antifragile.inbox_id": inbox_id}):
                result: PipelineResult = await pipeline.process(ctx, inbox_id)
            return result.to_json()

        self._process = process

        @self.jobs.every("17 * * * *", name="inbound.purge", queue="maintenance")
        async def purge_inbox(ctx: JobContext) -> dict[str, int]:
            """Drop the inbox entries whose deduplication window has passed (hourly)."""
            purged = await ctx.jobs.queue.purge_inbound(now=ctx.clock.time())
            return {"purged": purged}

        self._inbox = _GroupCommit(self)

    # -- extension points ---------------------------------------------------------------------

    def on_message(
        self,
        intent: str | Sequence[str],
        *,
        min_confidence: float = 0.0,
        priority: int = 0,
        actions: Sequence[str] = (),
        name: str | None = None,
    ) -> Callable[[_Handler], _Handler]:
        """``@assistant.on_message(intent, min_confidence=..., priority=..., actions=...)`` on
        an ``async def handler(ctx: MessageContext)``, returned unchanged (see
        :meth:`~antifragile.inbound.Handlers.on_message`)."""
        return self.handlers.on_message(
            intent, min_confidence=min_confidence, priority=priority, actions=actions, name=name
        )

    def action(
        self,
        name: str,
        *,
        provider: str | None = None,
        compensate: ActionFunction | None = None,
        retry: Retry | None = None,
        replace: bool = False,
        flag: str | None = None,
        feature: str | None = None,
        job: str | None = None,
        applies: Applies | None = None,
        on_unknown: OnUnknown = "review",
    ) -> Callable[[_Action], _Action]:
        """``@assistant.action(name, provider=..., compensate=..., flag=..., feature=...,
        job=..., applies=..., on_unknown=...)`` on an ``async def action(ctx: ActionContext)``,
        returned unchanged (see :class:`~antifragile.inbound.Actions`)."""
        return self.actions.action(
            name,
            provider=provider,
            compensate=compensate,
            retry=retry,
            replace=replace,
            flag=flag,
            feature=feature,
            job=job,
            applies=applies,
            on_unknown=on_unknown,
        )

    def on_event(self, topic: str) -> Callable[[_Commerce], _Commerce]:
        """``@assistant.on_event("orders/create")`` on an ``async def f(ctx: CommerceContext)``
        for a Shopify topic, returned unchanged."""
        return self.pipeline.on_event(topic)

    def on_delivery_status(self, hook: _Hook) -> _Hook:
        """``@assistant.on_delivery_status`` registers ``async def hook(status, match)``,
        called after each provider delivery status is recorded (see
        :class:`~antifragile.inbound.DeliveryStatuses`)."""
        return self.deliveries.on_status(hook)

    def on_whatsapp_media(self, hook: MediaHook) -> MediaHook:
        """``@assistant.on_whatsapp_media`` registers ``async def hook(media, event, tenant)``,
        handed each inbound WhatsApp medium downloaded for a tenant that asks
        (``whatsapp_media_download = "on"``) instead of the media directory; returned
        unchanged."""
        self.media.hook = hook
        return hook

    @overload
    def job(
        self, name: Callable[Concatenate[JobContext, _P], Awaitable[_R]], /
    ) -> JobFunction[_P, _R]: ...

    @overload
    def job(
        self, name: str | None = None, **options: Unpack[_JobOptions]
    ) -> Callable[[Callable[Concatenate[JobContext, _P], Awaitable[_R]]], JobFunction[_P, _R]]: ...

    def job(
        self,
        name: str | Callable[Concatenate[JobContext, _P], Awaitable[_R]] | None = None,
        **options: Unpack[_JobOptions],
    ) -> Any:
        """``@assistant.job`` or ``@assistant.job("name", queue=..., retry=...)``: a job of the
        assistant's :class:`~antifragile.jobs.Jobs` (see :meth:`~antifragile.jobs.Jobs.job`),
        typed like the function it wraps."""
        if callable(name):
            return self.jobs.job(name)
        return self.jobs.job(name, **options)

    def every(
        self, cron: str, **options: Unpack[_ScheduleOptions]
    ) -> Callable[[Callable[[JobContext], Awaitable[_R]]], Schedule[_R]]:
        """``@assistant.every("*/5 * * * *", ...)`` on ``async def f(ctx)``: a periodic job of
        the assistant's :class:`~antifragile.jobs.Jobs` (see
        :meth:`~antifragile.jobs.Jobs.every`)."""
        return self.jobs.every(cron, **options)

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the queue and the shared-state store, and build the configured connectors
        (safe to call again).

        The shared state -- each provider's circuit breaker (a
        :class:`~antifragile.SharedCircuitBreaker`) and the per-sender limit -- lives in
        :attr:`state_store`: Redis when ``settings.redis_url`` is set, else the job database.
        A configured Redis that cannot be opened does not stop the service: this process then
        keeps that state to itself (``/health`` reports ``redis: down``, ``degraded``) until
        it is restarted.
        """
        await self.jobs.open()
        if self.state_store is None:
            self.state_store = await self._open_state_store()
        store = self.state_store
        if store is not None:
            if self._owns_connectors and self.connectors.store is None:
                self.connectors.store = store  # every process trips and recovers together
            if self.limits is not None and self.limits.store is None:
                self.limits.store = store.rate_limits  # the per-sender limit is global
                self._wired_limits = True
        for provider in PROVIDERS:
            if self.connectors.configured(provider):
                self.connectors.get(provider)
        self.jobs.breakers = self.breakers()
        observe_connectors(self.metrics, self.connectors)
        self.alerts.install()  # error rates from the connectors' policies, breaker listeners
        self.actions.declare(self.jobs, self.handlers)
        self.sessions.declare()  # the flows' on_complete actions, each a job of its own

    async def _open_state_store(self) -> Store | None:
        url = self.settings.redis_url
        if not url:
            return self.jobs.queue.store
        try:
            store = await asyncio.wait_for(open_store(url, clock=self.clock), REDIS_OPEN_TIMEOUT)
        except Exception as exc:  # reported by /health; the service runs without it
            _log.warning(
                "cannot open the Redis store (%s): breakers and limits stay in this process",
                getattr(exc, "code", None) or type(exc).__name__,
            )
            return None
        self._owned_store = store
        return store

    async def close(self) -> None:
        try:
            close_classifier = getattr(self.classifier, "aclose", None)
            if isinstance(self.classifier, TenantClassifiers) and callable(close_classifier):
                await close_classifier()  # the models' connections it opened
            if self._owns_connectors:
                await self.connectors.aclose()
        finally:
            owned, self._owned_store = self._owned_store, None
            self.state_store = None
            if self._wired_limits and self.limits is not None:
                self.limits.store, self._wired_limits = None, False
            try:
                if owned is not None:
                    await owned.close()
            finally:
                await self.jobs.close()

    async def __aenter__(self) -> Assistant:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the inbound path ---------------------------------------------------------------------

    async def ingest(
        self, events: Sequence[InboundEvent], *, request_id: str | None = None
    ) -> list[Recorded]:
        """Record *events* in the inbox -- deduplicated by the provider's event id -- and
        enqueue one ``inbound.process`` job per new one, in one transaction. The jobs carry
        *request_id* (else the current one) in their context.

        A customer's message gets the ordering key of its tenant and sender
        (:func:`~antifragile.inbound._pipeline.sender_ordering_key`): one customer's messages
        are processed one at a time, in the order they were recorded, whichever worker takes
        them; different customers' run concurrently."""
        if not events:
            return []
        current = current_request_id()
        if current is not None and request_id in (None, current):
            # the jobs' request id is current already (a webhook's): prepare() captures it
            return await self._inbox.record(self._entries(events, request_id))
        with request_context(request_id or current):  # captured by prepare()
            entries = self._entries(events, request_id)
        return await self._inbox.record(entries)

    def _entries(
        self, events: Sequence[InboundEvent], request_id: str | None
    ) -> list[NewInboxEntry]:
        """The inbox entries of *events*, each with its processing job (which captures the
        current request id)."""
        ttl = self.settings.inbox_ttl
        entries = []
        for event in events:
            entry_id = new_job_id()
            configured = self._process.configure(
                idempotency_key=f"inbound:{entry_id}", ordering_key=self._ordering_key(event)
            )
            entries.append(
                NewInboxEntry(
                    channel=event.channel.value,
                    event_id=event.event_id,
                    kind=event.kind.value,
                    tenant_key=event.tenant_key,
                    payload=event.to_sealed_json(),
                    ttl=ttl,
                    job=configured.prepare(entry_id),
                    id=entry_id,
                    request_id=request_id,
                )
            )
        return entries

    def _ordering_key(self, event: InboundEvent) -> str | None:
        """The ordering key of *event*'s job: its tenant's and sender's for a customer's
        message (the tenant's routing key when no tenant is configured for it), none else."""
        if event.kind is not EventKind.MESSAGE or not event.sender:
            return None
        tenant = resolve_tenant(self.tenants, event)
        tenant_id = tenant.id if tenant is not None else f"{event.channel.value}:{event.tenant_key}"
        return sender_ordering_key(tenant_id, event.sender)

    # -- processes ----------------------------------------------------------------------------

    def worker(self, **options: Unpack[WorkerOptions]) -> Worker:
        """A worker for every queue of the assistant (``Worker`` options pass through).

        Inbound events run concurrently, each customer's one at a time in the order they
        arrived (their jobs' ordering key, see :meth:`ingest`)."""
        options.setdefault("concurrency", self.settings.worker_concurrency)
        return self.jobs.worker(**options)

    def scheduler(self, **options: Unpack[SchedulerOptions]) -> Scheduler:
        """A :class:`~antifragile.jobs.Scheduler` of the assistant's periodic jobs
        (``Scheduler`` options pass through); its retention is the settings' unless given."""
        if "retention" not in options:
            options["retention"] = Retention(
                succeeded=self.settings.retention_succeeded,
                resolved=self.settings.retention_resolved,
            )
        return Scheduler(self.jobs, **options)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The circuit breaker of each provider's connector, by provider name."""
        return dict(self.connectors.breakers())

    def tenant(self, tenant_id: str) -> Tenant:
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise ConfigurationError(f"no tenant {tenant_id!r}")


class _GroupCommit:
    """Records concurrent webhooks' inbox entries in shared transactions (group commit).

    While one ``record_inbound`` transaction is in flight, the entries of the requests that
    arrive meanwhile wait together and go into the next transaction as one batch; each request
    still waits for the commit of its own entries before its 200. Under load this turns many
    small durable transactions (one ``fsync`` each on SQLite) into a few larger ones, without
    ever delaying a lone request. When a shared batch fails (but for an unreachable store),
    each request's entries are recorded again on their own: a request whose entries cannot be
    recorded gets its error, and the others their 200.
    """

    def __init__(self, assistant: Assistant) -> None:
        self._assistant = assistant
        self._pending: list[tuple[list[NewInboxEntry], asyncio.Future[list[Recorded]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def record(self, entries: list[NewInboxEntry]) -> list[Recorded]:
        future: asyncio.Future[list[Recorded]] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        # a request cancelled meanwhile (its client went away) leaves its entries in the batch
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                # one pass of the event loop first: requests already under way add their
                # entries to this batch (one thread hop and one commit for all of them)
                await asyncio.sleep(0)
                batch, self._pending = self._pending, []
                await self._flush(batch)
        finally:
            self._task = None

    async def _flush(
        self, batch: list[tuple[list[NewInboxEntry], asyncio.Future[list[Recorded]]]]
    ) -> None:
        flat = [entry for entries, _ in batch for entry in entries]
        assistant = self._assistant
        try:
            recorded = await assistant.jobs.queue.record_inbound(flat, now=assistant.clock.time())
        except BaseException as exc:
            shared = len(batch) > 1 and isinstance(exc, Exception)
            if shared and not isinstance(exc, StoreUnavailableError):
                # perhaps one request's entries failed the batch: each request's on their own,
                # so that the others are recorded and only that one gets the error
                for one in batch:
                    await self._flush([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        assistant.jobs.observed_enqueue(  # the inbox's processing jobs, for the metrics
            [e.job for e in flat if e.job is not None],
            [r.created for e, r in zip(flat, recorded, strict=False) if e.job is not None],
        )
        start = 0
        for entries, future in batch:
            if not future.done():
                future.set_result(recorded[start : start + len(entries)])
            start += len(entries)
