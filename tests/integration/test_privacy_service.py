"""Personal data through the running service (real uvicorn, SQLite, the provider sandbox over
real HTTP): job rows carry references, not the people an AI result names; a request id that
could carry personal data is replaced; one customer's records are erased by the admin route
and by ``antifragile erase``, once; a session reset forgets the phone number."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from antifragile.cli._app import app as cli
from antifragile.inbound import Sessions
from antifragile.observability import reference
from antifragile.sandbox import (
    ProviderSandbox,
    SlackSimulator,
    WebhookSender,
    WhatsAppSimulator,
    whatsapp_text_message,
)
from antifragile.service import Settings, create_app
from tests._service_standin import running_server
from tests._waiting import wait_until

APP_SECRET = "privacy-app-secret"
ADMIN_KEY = "privacy-admin-key-0123456789"
WA_TOKEN = "EAAG-privacy-token"
PHONE_ID = "106540352242922"
HOOK = "T0001/B0001/privacySeCrEt12"
PHONE = "447700900123"
EMAIL = "ada.lovelace@example.com"


@dataclass
class Service:
    url: str
    db: Path
    sandbox: ProviderSandbox
    sender: WebhookSender
    admin: httpx.Client

    def say(self, text: str, phone: str = PHONE) -> None:
        delivery = self.sender.send_whatsapp(
            f"{self.url}/v1/webhooks/whatsapp",
            whatsapp_text_message(from_=phone, body=text, phone_number_id=PHONE_ID),
            app_secret=APP_SECRET,
        )
        assert delivery.status == 200, delivery.response

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.db)) as conn:
            return conn.execute(sql).fetchall()

    def effects(self, provider: str) -> int:
        return len(self.sandbox.effects(provider))


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    simulators = [
        WhatsAppSimulator(access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6),
        SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6),
    ]
    with ProviderSandbox(simulators) as sandbox:
        for name, value in {
            "ANTIFRAGILE_WHATSAPP_BASE_URL": sandbox.base_url("whatsapp"),
            "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
            "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
            "ANTIFRAGILE_SLACK_WEBHOOK_URL": f"{sandbox.base_url('slack')}/services/{HOOK}",
        }.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "antifragile.toml"
        config.write_text(
            f'[tenants.acme]\nname = "Acme"\nwhatsapp_phone_number_id = "{PHONE_ID}"\n'
        )
        db = tmp_path / "service.db"
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{db}",
                "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
                "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
                "ANTIFRAGILE_CONFIG": str(config),
            }
        )
        app = create_app(settings, run_worker=True, worker_options={"poll_interval": 0.02})
        with (
            running_server(app) as url,
            WebhookSender(timeout=30.0) as sender,
            httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as admin,
        ):
            yield Service(url, db, sandbox, sender, admin)


def test_ai_results_store_references_never_the_people_they_name(service: Service) -> None:
    """Entities an AI service posts under any name -- ``customer_email``, ``phone_number``,
    ``full_name``, ``contact.email`` -- and phone numbers inside free text (``%2B``-encoded
    too) reach the job rows as references; timestamps and ids stay as they are. An email
    address as the request id is replaced, so no row or log line carries it."""
    body = {
        "message_id": "ai-privacy-1",
        "tenant": "acme",
        "sender": f"+{PHONE}",
        "text": "My order arrived broken",
        "intent": "COMPLAINT",
        "confidence": 0.97,
        "entities": {
            "customer_email": EMAIL,
            "phone_number": "+447700900777",
            "full_name": "Ada Lovelace",
            "contact": {"email": "ada@work.example", "mobile": "07700 900888"},
            "note": "call back on %2B447700900999 please",
            "order": "1001",
            "ordered_at": 1765111111,
        },
    }
    posted = service.admin.post("/v1/ai-results", json=body, headers={"x-request-id": EMAIL})
    assert posted.status_code == 202, posted.text
    assert "@" not in posted.headers["x-request-id"]
    wait_until(lambda: service.effects("slack") == 1 and service.effects("whatsapp") == 1)

    def saga_finished() -> bool:
        rows = service.rows("SELECT state FROM antifragile_jobs WHERE name LIKE 'actions.%'")
        return rows == [("succeeded",)]

    wait_until(saga_finished)
    stored = json.dumps(
        service.rows(
            "SELECT payload, result, state_data, last_error, history, context, idempotency_key "
            "FROM antifragile_jobs"
        )
    )
    for person in (EMAIL, "447700900777", "Ada Lovelace", "ada@work.example", "900888"):
        assert person not in stored
    assert "447700900999" not in stored
    assert reference("+447700900999") in stored
    ((payload,),) = service.rows("SELECT payload FROM antifragile_jobs WHERE name LIKE 'actions.%'")
    entities = json.loads(payload)["data"]["classification"]["entities"]
    assert entities["customer_email"] == reference(EMAIL)
    assert entities["contact"]["mobile"] == reference("07700 900888")
    assert (entities["order"], entities["ordered_at"]) == ("1001", 1765111111)
    (request_id,) = service.rows("SELECT request_id FROM antifragile_inbox")[0]
    assert request_id
    assert "@" not in request_id


def test_a_customer_is_erased_by_the_admin_route_and_the_cli_once(service: Service) -> None:
    """A customer's conversation leaves inbox entries, a session and outbound messages; the
    admin route counts them (dry run), erases them, and finds nothing the second time, nor
    does ``antifragile erase``; another customer's records stay. Without credentials: 401;
    without anyone named: 400."""
    service.say("Hello there")
    service.say("Ada Lovelace")
    service.say("Hello there", phone="447700900456")
    wait_until(lambda: service.effects("whatsapp") == 3)
    key = Sessions.key_for("acme", PHONE)
    assert service.admin.get(f"/v1/admin/sessions/{key}").status_code == 200

    url = f"{service.url}/v1/admin/erasure"
    assert httpx.post(url, json={"phone": f"+{PHONE}"}).status_code == 401
    nobody = service.admin.post("/v1/admin/erasure", json={})
    assert nobody.status_code == 400
    assert nobody.json()["error"]["code"] == "VALIDATION"

    dry = service.admin.post("/v1/admin/erasure", json={"phone": f"+{PHONE}", "dry_run": True})
    assert dry.status_code == 200, dry.text
    counted = dry.json()["data"]["erased"]
    assert counted["inbox"] == 2
    assert counted["sessions"] == 1
    assert counted["outbound_messages"] >= 2
    assert service.admin.get(f"/v1/admin/sessions/{key}").status_code == 200

    done = service.admin.post("/v1/admin/erasure", json={"phone": f"+{PHONE}"}).json()["data"]
    assert done["erased"] == counted
    assert done["dry_run"] is False
    assert PHONE not in json.dumps(done)
    assert service.admin.get(f"/v1/admin/sessions/{key}").status_code == 404
    inbox = json.dumps(service.rows("SELECT payload FROM antifragile_inbox"))
    assert PHONE not in inbox
    assert "447700900456" in inbox
    kv = json.dumps(service.rows("SELECT key, value FROM antifragile_kv"))
    assert PHONE not in kv

    again = service.admin.post("/v1/admin/erasure", json={"phone": f"+{PHONE}"})
    assert again.json()["data"]["total"] == 0

    database = f"sqlite:///{service.db}"
    runner = CliRunner()
    refused = runner.invoke(cli, ["erase", "--phone", f"+{PHONE}", "--database-url", database])
    assert refused.exit_code == 2
    assert len(refused.output.strip().splitlines()) == 1
    result = runner.invoke(
        cli, ["erase", "--phone", f"+{PHONE}", "--yes", "--json", "--database-url", database]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 0
    other = runner.invoke(
        cli, ["erase", "--phone", "+447700900456", "--dry-run", "--database-url", database]
    )
    assert other.exit_code == 0, other.output
    assert "would erase" in other.output


def test_a_session_reset_forgets_the_phone_number(service: Service) -> None:
    service.say("Hello there")
    wait_until(lambda: service.effects("whatsapp") == 1)
    key = Sessions.key_for("acme", PHONE)
    reset = service.admin.post(f"/v1/admin/sessions/{key}/reset")
    assert reset.status_code == 200, reset.text
    (value,) = service.rows(f"SELECT value FROM antifragile_kv WHERE key = '{key}'")[0]
    assert PHONE not in value
    assert json.loads(value)["phone"] == ""
    service.say("Hello again")  # the next message starts over and brings the number back
    wait_until(lambda: service.effects("whatsapp") == 2)
    (value,) = service.rows(f"SELECT value FROM antifragile_kv WHERE key = '{key}'")[0]
    assert json.loads(value)["phone"] == PHONE


def _body(message: dict[str, Any]) -> str:
    """The text of a WhatsApp message the sandbox accepted (a text or an interactive one)."""
    if message.get("type") == "interactive":
        return str(message["interactive"]["body"]["text"])
    return str(message["text"]["body"])


def test_with_a_data_key_personal_data_is_stored_encrypted_and_still_erasable(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``ANTIFRAGILE_DATA_KEYS`` no table holds the phone number, what the customer wrote
    or what was sent to them: the inbox, the session and the outbound messages (recipient,
    text) hold ciphertext, keys and job rows hashes keyed with the data key; the
    conversation works as before, the admin API shows the replies, and erasure still finds
    every record."""
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", "k1-5e0c7d2a9b8f4e6d1c3a5b7e9f0d2c4a")
    service.say("Hello there")
    service.say("Ada Lovelace")
    wait_until(lambda: service.effects("whatsapp") == 2)
    sent = [_body(effect.data) for effect in service.sandbox.effects("whatsapp")]
    stored = json.dumps(
        service.rows("SELECT id, payload FROM antifragile_inbox")
        + service.rows("SELECT key, value FROM antifragile_kv")
        + service.rows(
            "SELECT payload, result, state_data, last_error, history, idempotency_key, "
            "ordering_key FROM antifragile_jobs"
        )
        + service.rows("SELECT key, result, fingerprint FROM antifragile_idempotency")
    )
    # every table: the inbox, sessions, outbound messages (recipient, text), jobs
    for plain in (PHONE, "Hello there", "Ada Lovelace", *sent):
        assert plain not in stored
    # nor a plain hash of the number (a session's key, an ordering key): they are keyed
    for guessable in (f"acme\x00{PHONE}", PHONE):
        assert hashlib.sha256(guessable.encode()).hexdigest()[:24] not in stored
    assert Sessions.key_for("acme", PHONE) in stored
    assert "$sealed" in stored
    outbound = service.rows("SELECT value FROM antifragile_kv WHERE key LIKE 'outmsg:%'")
    assert len(outbound) == 2
    for (value,) in outbound:
        record = json.loads(value)
        assert set(record["to"]) == {"$sealed"}
        assert set(record["text"]) == {"$sealed"}
    listed = service.admin.get("/v1/admin/messages").json()["data"]["items"]
    shown = [service.admin.get(f"/v1/admin/messages/{m['id']}").json()["data"] for m in listed]
    assert sorted(m["text"] for m in shown) == sorted(sent)
    assert {m["to"] for m in shown} == {"+4477••••••23"}
    key = Sessions.key_for("acme", PHONE)
    shown = service.admin.get(f"/v1/admin/sessions/{key}").json()["data"]
    assert shown["phone"].startswith("+4477")
    erased = service.admin.post("/v1/admin/erasure", json={"phone": PHONE}).json()["data"]
    assert erased["erased"]["inbox"] == 2
    assert erased["erased"]["sessions"] == 1
