"""The service end to end: a real uvicorn server (API + worker in one process, SQLite), every
provider behind the sandbox over real HTTP, customers talking over signed WhatsApp webhooks.

The sandbox's effect log is the ground truth for what happened at each provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile.inbound import Sessions
from antifragile.policies import Constant, Retry
from antifragile.sandbox import (
    HubSpotSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    ShopifySimulator,
    Simulator,
    SlackSimulator,
    WebhookSender,
    WhatsAppSimulator,
    whatsapp_text_message,
)
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests._service_standin import running_server

APP_SECRET = "e2e-app-secret"
ADMIN_KEY = "e2e-admin-key-0123456789"
WA_TOKEN = "EAAG-e2e-token"
PHONE_ID = "106540352242922"
RESEND_KEY = "re_e2e_key_12345"
SHOPIFY_TOKEN = "shpat_e2e_token"
HUBSPOT_TOKEN = "pat-e2e-token"
HOOK = "T0001/B0001/e2eSeCrEt1234"
OWNER = "owner@acme.example"
ANSWERS = ["Ada Lovelace", "ada@example.com", "A cake for 20 people", "weekday mornings"]


@dataclass
class Service:
    url: str
    sandbox: ProviderSandbox
    sender: WebhookSender
    admin: httpx.Client

    def say(self, phone: str, text: str) -> Any:
        delivery = self.sender.send_whatsapp(
            f"{self.url}/v1/webhooks/whatsapp",
            whatsapp_text_message(from_=phone, body=text, phone_number_id=PHONE_ID),
            app_secret=APP_SECRET,
        )
        assert delivery.status == 200, delivery.response
        return delivery

    def converse(self, phone: str) -> None:
        self.say(phone, "Hello there")
        for answer in ANSWERS:
            self.say(phone, answer)

    def session(self, phone: str) -> dict[str, Any]:
        key = Sessions.key_for("acme", phone)
        response = self.admin.get(f"/v1/admin/sessions/{key}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def effects(self, provider: str) -> int:
        return len(self.sandbox.effects(provider))


def wait_for(condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def simulators() -> list[Simulator]:
    """The providers of an intake conversation, with the credentials the service gets."""
    return [
        WhatsAppSimulator(access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6),
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=10**6),
        ShopifySimulator(access_tokens=[SHOPIFY_TOKEN], bucket_size=10**6),
        HubSpotSimulator(tokens=[HUBSPOT_TOKEN], burst=10**6),
        SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6),
    ]


def sandbox_env(sandbox: ProviderSandbox) -> dict[str, str]:
    """The connectors' settings pointing at *sandbox*."""
    return {
        "ANTIFRAGILE_WHATSAPP_BASE_URL": sandbox.base_url("whatsapp"),
        "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
        "ANTIFRAGILE_RESEND_BASE_URL": sandbox.base_url("resend"),
        "ANTIFRAGILE_RESEND_API_KEY": RESEND_KEY,
        "ANTIFRAGILE_SHOPIFY_BASE_URL": sandbox.base_url("shopify"),
        "ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN,
        "ANTIFRAGILE_HUBSPOT_BASE_URL": sandbox.base_url("hubspot"),
        "ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN,
        "ANTIFRAGILE_SLACK_WEBHOOK_URL": f"{sandbox.base_url('slack')}/services/{HOOK}",
        "ANTIFRAGILE_EMAIL_FROM": "assistant@acme.example",
    }


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    with ProviderSandbox(simulators()) as sandbox:
        env = sandbox_env(sandbox)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "antifragile.toml"
        config.write_text(
            f'[tenants.acme]\nname = "Acme Bakery"\nwhatsapp_phone_number_id = "{PHONE_ID}"\n'
            f'owner_email = "{OWNER}"\n'
            # one attempt per call for Shopify: the job's retries are what the test watches
            "[providers.shopify]\nattempts = 1\nbreaker = false\n"
        )
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
                "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
                "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "verify-me",
                "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
                "ANTIFRAGILE_CONFIG": str(config),
            }
        )
        assistant = Assistant(
            settings,
            integration_retry=Retry(attempts=3, backoff=Constant(0.3)),
        )
        app = create_app(
            settings,
            assistant=assistant,
            run_worker=True,
            worker_options={"concurrency": 8, "poll_interval": 0.05},
        )
        with (
            running_server(app) as url,
            WebhookSender(timeout=30.0) as sender,
            httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=10) as admin,
        ):
            yield Service(url, sandbox, sender, admin)


def test_a_whole_intake_conversation_runs_every_integration_exactly_once(
    service: Service,
) -> None:
    """Five signed messages sent back to back -> five replies, the answers stored in order; on
    completion one summary email, one Shopify
    customer, one HubSpot contact and one Slack post at the providers, and every status flag
    of the session ends ``sent``."""
    phone = "447700900123"
    service.converse(phone)
    wait_for(lambda: service.effects("whatsapp") >= 5, what="five replies")
    wait_for(
        lambda: all(
            service.session(phone).get(flag) == "sent"
            for flag in ("email_status", "shopify_status", "hubspot_status", "slack_status")
        ),
        what="every integration sent",
    )
    assert service.effects("whatsapp") == 5
    assert service.effects("resend") == 1
    assert service.effects("shopify") == 1
    assert service.effects("hubspot") == 1
    assert service.effects("slack") == 1
    session = service.session(phone)
    assert session["progress_status"] == "completed"
    assert session["summary_email_sent"] is True
    # the answers arrived back to back and reached the flow in the order they were sent
    assert session["fields"]["name"] == ANSWERS[0]
    assert session["fields"]["need"] == ANSWERS[2]
    assert session["fields"]["contact_time"] == ANSWERS[3]


def test_shopify_down_still_answers_then_syncs_after_recovery(service: Service) -> None:
    """With Shopify answering 503 the customer still gets every reply; the session's
    ``shopify_status`` is pending or failed meanwhile, and ``sent`` (one customer) once Shopify
    is back and the operator redrives the dead job from the admin API."""
    service.sandbox.faults("shopify", chaos=[(1.0, ProviderFault.error(503))])
    phone = "447700900456"
    service.converse(phone)
    wait_for(lambda: service.effects("whatsapp") >= 5, what="five replies")
    wait_for(
        lambda: service.session(phone).get("shopify_status") == "failed",
        timeout=60,
        what="shopify failed",
    )
    assert service.effects("shopify") == 0
    assert service.session(phone)["email_status"] == "sent"
    service.sandbox.clear_faults("shopify")
    retried = service.admin.post("/v1/admin/dlq/retry", json={"provider": "shopify"})
    assert retried.status_code == 200, retried.text
    wait_for(
        lambda: service.session(phone).get("shopify_status") == "sent",
        timeout=30,
        what="shopify sent after recovery",
    )
    assert service.effects("shopify") == 1


def test_the_same_webhook_delivered_three_times_is_processed_once(service: Service) -> None:
    """A delivery redelivered twice (providers retry) is recorded once and answered once."""
    first = service.say("447700900789", "Hello there")
    service.sender.redeliver(first)
    service.sender.redeliver(first)
    wait_for(lambda: service.effects("whatsapp") >= 1, what="the reply")
    time.sleep(0.5)  # would a duplicate reply follow? (the worker polls every 50 ms)
    assert service.effects("whatsapp") == 1
    inbox = service.admin.get("/v1/admin/jobs", params={"name": "inbound.process"})
    assert inbox.status_code == 200, inbox.text
    assert len(inbox.json()["data"]["items"]) == 1


def test_bad_signatures_are_401_and_record_nothing(service: Service) -> None:
    """A delivery signed with the wrong secret, or not signed, gets a 401 envelope and leaves
    no trace: no job, no reply."""
    url = f"{service.url}/v1/webhooks/whatsapp"
    payload = whatsapp_text_message(from_="447700900999", body="hi", phone_number_id=PHONE_ID)
    wrong = service.sender.send_whatsapp(url, payload, app_secret="not-the-secret")
    assert wrong.status == 401
    unsigned = httpx.post(url, json=payload, timeout=30)
    assert unsigned.status_code == 401
    body = unsigned.json()
    assert body["success"] is False
    assert body["error"]["code"] == "SIGNATURE_INVALID"
    jobs = service.admin.get("/v1/admin/jobs").json()["data"]["items"]
    assert jobs == []
    time.sleep(0.3)
    assert service.effects("whatsapp") == 0


def test_a_pre_classified_message_runs_its_handler_actions_and_reply(service: Service) -> None:
    """A message posted to /v1/ai-results with intent COMPLAINT skips the classifier: a support
    ticket (a task) is opened, sales are told on Slack, the customer gets a reply; posting it
    again is a duplicate that changes nothing."""
    body = {
        "message_id": "ai-msg-1",
        "tenant": "acme",
        "channel": "whatsapp",
        "sender": "+447700900321",
        "text": "My order arrived broken",
        "intent": "COMPLAINT",
        "confidence": 0.97,
        "entities": {"order": "1001"},
    }
    first = service.admin.post("/v1/ai-results", json=body)
    assert first.status_code == 202, first.text
    assert first.json()["data"]["duplicate"] is False
    again = service.admin.post("/v1/ai-results", json=body)
    assert again.json()["data"] == {**first.json()["data"], "duplicate": True}
    wait_for(lambda: service.effects("whatsapp") >= 1, what="the reply")
    wait_for(lambda: service.effects("slack") >= 1, what="the Slack notice")

    def tickets() -> list[dict[str, Any]]:
        found = service.admin.get("/v1/admin/tasks").json()["data"]["items"]
        return [task for task in found if task["type"] == "support_ticket"]

    wait_for(lambda: len(tickets()) == 1, what="the support ticket")
    time.sleep(0.3)
    assert service.effects("whatsapp") == 1
    assert service.effects("slack") == 1
    process = service.admin.get("/v1/admin/jobs", params={"name": "inbound.process"})
    (listed,) = process.json()["data"]["items"]
    job = service.admin.get(f"/v1/admin/jobs/{listed['id']}").json()["data"]
    assert job["result"]["intent"] == "COMPLAINT"
    assert job["result"]["classified_by"] == "ai"


def test_ai_results_need_credentials_and_a_valid_body(service: Service) -> None:
    """Without a credential: 401; with a bad body: 400 VALIDATION; an unknown tenant: 404."""
    body = {
        "message_id": "m",
        "tenant": "acme",
        "sender": "447700900321",
        "intent": "X",
        "confidence": 0.5,
    }
    assert httpx.post(f"{service.url}/v1/ai-results", json=body, timeout=30).status_code == 401
    bad = service.admin.post("/v1/ai-results", json={**body, "confidence": 2})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "VALIDATION"
    unknown = service.admin.post("/v1/ai-results", json={**body, "tenant": "nope"})
    assert unknown.status_code == 404
