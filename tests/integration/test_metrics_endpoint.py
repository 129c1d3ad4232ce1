"""``GET /metrics`` of a real app over real HTTP: the service's own assistant on a SQLite file,
signed WhatsApp webhooks, a worker running the jobs against the sandbox's WhatsApp API, and
Prometheus text scraped back.

The server and the worker share the test's event loop (uvicorn serves as a task), so the
worker counts into the same metrics the app exports -- as under ``antifragile serve``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from antifragile.cli._jobs import _serve_metrics
from antifragile.cli._load import Target
from antifragile.inbound import whatsapp_signature
from antifragile.jobs import JobContext, Jobs
from antifragile.sandbox import ProviderSandbox, WhatsAppSimulator, whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests._service_standin import StandInAssistant, free_port, running_server

APP_SECRET = "metrics-app-secret"
WA_TOKEN = "EAAG-metrics-token"
PHONE_ID = "106540352242922"
SCRAPE_TOKEN = "scrape-token-0123456789"


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone: a test's loop owns
    them (started inside a fixture, uvicorn would put back the fixture runner's handler)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve *app* with uvicorn as a task of the running loop; yields its base URL."""
    port = free_port()
    server = QuietServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", log_config=None
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("the test server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderSandbox]:
    simulator = WhatsAppSimulator(
        access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6
    )
    with ProviderSandbox([simulator]) as running:
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_BASE_URL", running.base_url("whatsapp"))
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN", WA_TOKEN)
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        yield running


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line of a Prometheus text body."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, number = line.rpartition(" ")
            found[key] = float(number)
    return found


def sample(text: str, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for key, number in samples(text).items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            return number
    raise AssertionError(f"no sample {name}{{{inner}}}")


def signed(payload: dict[str, Any], secret: str = APP_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": whatsapp_signature(secret, body),
    }
    return body, headers


async def test_scrape_shows_inbound_intents_jobs_and_queues(
    tmp_path: Path, sandbox: ProviderSandbox
) -> None:
    """Signed deliveries (one new, one redelivered), refused ones (bad signature, wrong type),
    then a worker run: the scrape shows each inbound counter, the queue depth before and after,
    the jobs enqueued, started and succeeded, the intent detected and the reply's outbound
    attempt at the WhatsApp sandbox."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
        }
    )
    assistant = Assistant(settings)
    assistant.metrics.queue_ttl = 0.0  # every scrape reads the queue afresh (the test's clock)
    app = create_app(settings, assistant=assistant)
    message = whatsapp_text_message(
        from_="447700900123",
        body="I want to order a birthday cake",
        message_id=f"wamid.{uuid.uuid4().hex}",
        phone_number_id=PHONE_ID,
    )
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        hook = "/v1/webhooks/whatsapp"
        body, headers = signed(message)
        assert (await client.post(hook, content=body, headers=headers)).status_code == 200
        assert (await client.post(hook, content=body, headers=headers)).status_code == 200
        forged, forged_headers = signed(message, secret="not-the-secret")
        refused = await client.post(hook, content=forged, headers=forged_headers)
        assert refused.status_code == 401
        wrong_type = await client.post(
            hook, content=b"x=1", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert wrong_type.status_code == 415

        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = scraped.text
        assert text.startswith("# HELP")  # the Prometheus format, not the JSON envelope
        assert sample(text, "antifragile_inbound_received_total", channel="whatsapp") == 1
        assert sample(text, "antifragile_inbound_duplicates_total", channel="whatsapp") == 1
        rejected = "antifragile_inbound_rejected_total"
        assert sample(text, rejected, channel="whatsapp", code="SIGNATURE_INVALID") == 1
        assert sample(text, rejected, channel="whatsapp", code="UNSUPPORTED_MEDIA_TYPE") == 1
        process = {"job": "inbound.process", "queue": "inbound"}
        assert sample(text, "antifragile_jobs_enqueued_total", **process) == 1
        assert sample(text, "antifragile_queue_depth", queue="inbound") == 1
        assert sample(text, "antifragile_queue_lag_seconds", queue="inbound") >= 0

        await assistant.worker(poll_interval=0.01).run_until_idle()

        text = (await client.get("/metrics")).text
        assert sample(text, "antifragile_jobs_started_total", **process) == 1
        assert sample(text, "antifragile_jobs_succeeded_total", **process) == 1
        assert sample(text, "antifragile_queue_depth", queue="inbound") == 0
        assert sample(text, "antifragile_dlq_size", queue="inbound") == 0
        intents = {
            key: number
            for key, number in samples(text).items()
            if key.startswith("antifragile_intents_total{")
        }
        assert sum(intents.values()) == 1
        assert 'source="keywords"' in next(iter(intents))
        assert sample(text, "antifragile_intent_confidence_count") == 1
        # the reply went out as a job of its own, through the WhatsApp connector's policy
        replies = {"job": "replies.send", "queue": "replies"}
        assert sample(text, "antifragile_jobs_succeeded_total", **replies) == 1
        assert (
            sample(
                text, "antifragile_outbound_attempts_total", provider="whatsapp", outcome="success"
            )
            >= 1
        )
        assert sample(text, "antifragile_breaker_state", breaker="whatsapp", state="closed") == 1
    assert len(sandbox.effects("whatsapp")) == 1


def test_a_metrics_token_guards_the_scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``ANTIFRAGILE_METRICS_TOKEN`` set, a scrape without the bearer token is refused
    (401 envelope, code AUTH) and one with it is answered."""
    monkeypatch.setenv("ANTIFRAGILE_METRICS_TOKEN", SCRAPE_TOKEN)
    settings = Settings.from_env(
        {"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}"}
    )
    app = create_app(settings, assistant=StandInAssistant(settings))
    with running_server(app) as url:
        refused = httpx.get(f"{url}/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "AUTH"
        wrong = httpx.get(f"{url}/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain")


def test_a_worker_process_serves_its_own_job_counters(tmp_path: Path) -> None:
    """``antifragile worker --metrics-port`` serves the runs it made (from a thread, over
    real HTTP), without the queue gauges the API already exports."""
    jobs = Jobs(database_url=f"sqlite:///{tmp_path / 'worker.db'}")

    @jobs.job(queue="email")
    async def send(ctx: JobContext, to: str) -> None:
        return None

    port = free_port()
    server = _serve_metrics(Target(jobs), "127.0.0.1", port)
    try:

        async def work() -> None:
            async with jobs:
                await send.enqueue("someone")
                await jobs.worker().run_until_idle()

        asyncio.run(work())
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    labels = {"job": "send", "queue": "email"}
    assert sample(text, "antifragile_jobs_enqueued_total", **labels) == 1
    assert sample(text, "antifragile_jobs_succeeded_total", **labels) == 1
    assert "antifragile_queue_depth" not in text
