"""The operator's dashboard end to end: a real uvicorn server (API + worker, SQLite), a job that
really dies, and headless Chromium (the Debian package) driven by Playwright.

Chromium is ``/usr/bin/chromium``; without it the browser test skips, or fails in CI
(``CI=true``) with the command that installs it. Set ``ANTIFRAGILE_UPDATE_SCREENSHOTS=1`` to
write the documentation's screenshot (``docs/assets/dashboard.png``) again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from antifragile.errors import UpstreamUnavailableError
from antifragile.inbound._model import Channel
from antifragile.inbound._webhooks import parse_whatsapp
from antifragile.jobs import JobContext, JobFunction
from antifragile.policies import Retry
from antifragile.sandbox import whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from antifragile.service._dashboard import COOKIE
from antifragile.service._dashboard_views import mask_text
from tests._service_standin import running_server
from tests.conftest import IN_CI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ADMIN_KEY = "dashboard-admin-key-0123456789"
PHONE = "447700900123"
EMAIL = "ada@example.com"
REPLY = "Thanks, we will be in touch"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "assets" / "dashboard.png"


@dataclass
class Dashboard:
    url: str
    admin: httpx.Client
    #: contact -> the id of its dead ``crm.sync_contact`` job
    dead: dict[str, str]


def wait_for(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def declare_sync(assistant: Assistant, flags: Path) -> JobFunction[[str], dict[str, str]]:
    """A CRM sync job that fails for good while its contact's flag file exists (the file is
    removed by that failure), and succeeds on the redrive."""

    @assistant.jobs.job(
        name="crm.sync_contact", queue="integrations", provider="hubspot", retry=Retry(attempts=1)
    )
    async def sync_contact(ctx: JobContext, contact: str) -> dict[str, str]:
        flag = flags / f"{contact}.fail"
        if flag.exists():
            flag.unlink()
            raise UpstreamUnavailableError("the CRM answered 503")
        return {"contact": contact, "synced": "yes"}

    return sync_contact


async def seed(settings: Settings, flags: Path, contacts: list[str]) -> None:
    """Before the server starts: one sync job per contact (each set to fail once) and one
    conversation session holding a phone number and an email."""
    setup = Assistant(settings)
    sync = declare_sync(setup, flags)
    await setup.open()
    try:
        for contact in contacts:
            (flags / f"{contact}.fail").touch()
            await sync.enqueue(contact)
        tenant = setup.tenants[0]
        for number, text in enumerate(["Hello there", "Ada Lovelace", EMAIL]):
            body = whatsapp_text_message(from_=PHONE, body=text, message_id=f"wamid.seed{number}")
            for event in parse_whatsapp(json.dumps(body).encode()):
                await setup.sessions.handle(tenant, event)
        await setup.replies.send(
            tenant=tenant, channel=Channel.WHATSAPP, to=PHONE, text=REPLY, key="seed-reply"
        )
    finally:
        await setup.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dashboard")
    flags = root / "flags"
    flags.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        # two providers configured (never called): their breakers are on the page
        patch.setenv("ANTIFRAGILE_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/T0/B0/xyz")
        patch.setenv("ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN", "pat-dashboard-token")
        patch.setenv("ANTIFRAGILE_HUBSPOT_BASE_URL", "http://127.0.0.1:9")
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{root / 'service.db'}",
                "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
            }
        )
        contacts = ["c-browser", "c-http", "c-resolve"]
        asyncio.run(seed(settings, flags, contacts))
        assistant = Assistant(settings)
        declare_sync(assistant, flags)
        app = create_app(
            settings, assistant=assistant, run_worker=True, worker_options={"poll_interval": 0.05}
        )
        with (
            running_server(app) as url,
            httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=10) as admin,
        ):

            def dead() -> dict[str, str]:
                answer = admin.get("/v1/admin/dlq", params={"name": "crm.sync_contact"})
                assert answer.status_code == 200, answer.text
                items = answer.json()["data"]["items"]
                return {item["payload"]["contact"]: item["id"] for item in items}

            wait_for(lambda: len(dead()) == len(contacts), what="the sync jobs to die")
            forced = admin.post("/v1/admin/breakers/slack/open")
            assert forced.status_code == 200, forced.text
            yield Dashboard(url, admin, dead())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium'"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "the playwright package is missing: pip install -e '.[dev]'"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def signed_in(dashboard: Dashboard) -> Iterator[tuple[httpx.Client, httpx.Response, str]]:
    """A cookie-holding client signed in through the login form, the login's answer and the
    page's CSRF token."""
    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        login = client.post("/dashboard/login", data={"api_key": ADMIN_KEY})
        assert login.status_code == 303, login.text
        assert login.headers["location"] == "/dashboard"
        page = client.get("/dashboard")
        assert page.status_code == 200, page.text
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match is not None
        yield client, login, match.group(1)


def state_of(dashboard: Dashboard, job_id: str) -> str:
    answer = dashboard.admin.get(f"/v1/admin/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    state: str = answer.json()["data"]["state"]
    return state


def test_the_dashboard_without_credentials_shows_no_data(dashboard: Dashboard) -> None:
    """Without a credential the page redirects to the login form and the data routes answer
    401 -- no job id, queue or session in any answer; a wrong key gets the form back with a
    401 and no cookie; a forged cookie is worth nothing; nothing is retried."""
    job_id = dashboard.dead["c-http"]
    with httpx.Client(base_url=dashboard.url, timeout=10) as anonymous:
        page = anonymous.get("/dashboard")
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login"
        panels = anonymous.get("/dashboard/panels")
        assert panels.status_code == 401
        assert panels.json()["error"]["code"] == "AUTH"
        retried = anonymous.post(f"/dashboard/dlq/{job_id}/retry")
        assert retried.status_code == 401
        login = anonymous.get("/dashboard/login")
        assert login.status_code == 200
        assert 'name="api_key"' in login.text
        wrong = anonymous.post("/dashboard/login", data={"api_key": "not-the-admin-key-000"})
        assert wrong.status_code == 401
        assert "set-cookie" not in wrong.headers
        anonymous.cookies.set(COOKIE, "forged-session-token", path="/dashboard")
        forged = anonymous.get("/dashboard")
        assert forged.status_code == 303
        for answer in (page, panels, retried, login, wrong, forged):
            assert job_id not in answer.text
            assert "integrations" not in answer.text
            assert "+4477" not in answer.text
    assert state_of(dashboard, job_id) == "dead"


def test_the_session_cookie_is_strict_and_posts_need_its_csrf_token(dashboard: Dashboard) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict cookie scoped to /dashboard; a retry
    without the session's CSRF token, with a wrong one, or from another origin is a 403 that
    changes nothing; phones and emails are masked on the page; a plain form post (no script)
    resolves a job and redirects back to the filtered page; signing out ends the session."""
    job_id = dashboard.dead["c-http"]
    with signed_in(dashboard) as (client, login, csrf):
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/dashboard" in cookie
        page = client.get("/dashboard")
        assert job_id in page.text
        assert PHONE not in page.text
        assert f"+{PHONE[:4]}" in page.text  # +4477•••••23
        assert EMAIL not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        url = f"/dashboard/dlq/{job_id}/retry"
        assert client.post(url).status_code == 403
        assert client.post(url, data={"csrf": "wrong"}).status_code == 403
        other = client.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "FORBIDDEN"
        assert state_of(dashboard, job_id) == "dead"
        # the same admin credentials in a header work too (no cookie, no CSRF token)
        with httpx.Client(base_url=dashboard.url, timeout=10) as header:
            fragment = header.get("/dashboard/panels", headers={"X-API-Key": ADMIN_KEY})
            assert fragment.status_code == 200
            assert job_id in fragment.text
        # without the page's script a button is a plain form post, answered by a redirect
        closed = dashboard.dead["c-resolve"]
        resolved = client.post(
            f"/dashboard/dlq/{closed}/resolve",
            data={"csrf": csrf, "reason": "synced by hand", "provider": "hubspot"},
        )
        assert resolved.status_code == 303
        assert resolved.headers["location"] == "/dashboard?provider=hubspot&notice=resolved"
        assert state_of(dashboard, closed) == "resolved"
        assert "The job is resolved." in client.get(resolved.headers["location"]).text
        out = client.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert client.get("/dashboard/panels").status_code == 401


def test_the_replies_panel_shows_each_reply_with_its_number_masked(dashboard: Dashboard) -> None:
    """The page's Replies panel lists the replies the admin API lists, each with its text and
    delivery status and its number masked (the seeded conversation's replies)."""
    listed = dashboard.admin.get("/v1/admin/messages")
    assert listed.status_code == 200, listed.text
    items = listed.json()["data"]["items"]
    assert items, "the seeded conversation was answered"
    fragment = dashboard.admin.get("/dashboard/panels")
    assert fragment.status_code == 200
    assert '<section id="messages">' in fragment.text
    for item in items:
        assert f'data-message-id="{item["id"]}"' in fragment.text
        assert item["to"] in fragment.text
    assert REPLY in fragment.text
    assert PHONE not in fragment.text


def test_a_dead_reply_shows_its_text_and_is_marked_as_sent_from_the_page(
    dashboard: Dashboard,
) -> None:
    """A dead reply's row shows its text and masked number with a Mark as sent button; the
    button (a plain form post) resolves the job and flags the reply sent."""

    def dead_replies() -> list[dict[str, Any]]:
        answer = dashboard.admin.get("/v1/admin/dlq", params={"name": "replies.send"})
        items: list[dict[str, Any]] = answer.json()["data"]["items"]
        return items

    wait_for(lambda: len(dead_replies()) == 1, what="the seeded reply to die")
    (job,) = dead_replies()
    with signed_in(dashboard) as (client, _, csrf):
        fragment = client.get("/dashboard/panels").text
        row = fragment[fragment.index(f'data-job-id="{job["id"]}"') :]
        assert REPLY in row.split("</tr>")[0]
        assert f"/dashboard/dlq/{job['id']}/mark-sent" in row.split("</tr>")[0]
        assert PHONE not in fragment
        marked = client.post(
            f"/dashboard/dlq/{job['id']}/mark-sent", data={"csrf": csrf, "note": "phoned"}
        )
        assert marked.status_code == 303
        assert marked.headers["location"] == "/dashboard?notice=marked"
    assert state_of(dashboard, job["id"]) == "resolved"
    shown = dashboard.admin.get(f"/v1/admin/dlq/{job['id']}").json()["data"]
    assert shown["message"]["status"] == "sent"
    assert "phoned" in shown["resolution"]


def test_error_texts_on_the_page_have_phones_and_emails_masked() -> None:
    """The free text the page shows (errors) has phone numbers and emails masked inside it,
    while job ids and HTTP status codes stay readable."""
    text = "contact +44 7700 900123 (ada@example.com) refused: HTTP 422 for job 01a2f3b4c5d6e7f8"
    masked = mask_text(text)
    assert "7700 900123" not in masked
    assert "+4477" in masked
    assert "ada@example.com" not in masked
    assert "a•••@example.com" in masked
    assert "HTTP 422" in masked
    assert "01a2f3b4c5d6e7f8" in masked
    assert mask_text(None) == ""


def test_revoking_an_api_key_ends_the_dashboard_sessions_it_opened(dashboard: Dashboard) -> None:
    """A session opened with a stored API key works until that key is revoked, and not a
    request longer: the data fragment answers 401 and the page sends back to the login."""
    created = dashboard.admin.post("/v1/admin/api-keys", json={"name": "dashboard test"})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["data"]["key"], created.json()["data"]["id"]
    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        assert client.post("/dashboard/login", data={"api_key": key}).status_code == 303
        assert client.get("/dashboard/panels").status_code == 200
        revoked = dashboard.admin.delete(f"/v1/admin/api-keys/{key_id}")
        assert revoked.status_code == 200, revoked.text
        assert client.get("/dashboard/panels").status_code == 401
        page = client.get("/dashboard")
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login"


def test_an_operator_retries_a_dead_job_from_the_browser(
    dashboard: Dashboard, browser: Browser, tmp_path: Path
) -> None:
    """In Chromium: sign in with the API key, see the breakers (slack forced open, hubspot
    closed), the queue with its dead job, the dead-letter row (also through the provider
    filter) and the session with its phone masked; click Retry -- the row leaves the
    dead-letter table and the job shows succeeded within seconds."""
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)  # a loaded CI machine is slow to paint
    job_id = dashboard.dead["c-browser"]
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        page.goto(f"{dashboard.url}/dashboard")
        expect(page).to_have_url(re.compile(r"/dashboard/login$"))
        page.fill("#api_key", ADMIN_KEY)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/dashboard$"))
        expect(page.locator('#breakers tr[data-provider="slack"] .state')).to_have_text(
            "forced_open"
        )
        expect(page.locator('#breakers tr[data-provider="hubspot"] .state')).to_have_text("closed")
        expect(page.locator('#queues tr[data-queue="integrations"]')).to_be_visible()
        row = page.locator(f'#dlq tr[data-job-id="{job_id}"]')
        expect(row).to_contain_text("UPSTREAM_UNAVAILABLE")
        expect(page.locator("#sessions")).to_contain_text("+4477")
        html = page.content()
        assert PHONE not in html
        assert EMAIL not in html
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("ANTIFRAGILE_UPDATE_SCREENSHOTS") or not SCREENSHOT.exists():
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

        page.fill('#filters input[name="provider"]', "slack")
        page.click("#filters button[type=submit]")
        expect(page.locator("#dlq .empty")).to_be_visible()
        expect(row).to_have_count(0)
        page.fill('#filters input[name="provider"]', "hubspot")
        page.click("#filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"provider=hubspot"))

        row.get_by_role("button", name="Retry").click()
        expect(page.locator("#notice")).to_contain_text("back in the queue")
        expect(row).to_have_count(0, timeout=5000)
        expect(page.locator(f'#failures tr[data-job-id="{job_id}"] .state')).to_have_text(
            "succeeded", timeout=8000
        )
        assert state_of(dashboard, job_id) == "succeeded"
    finally:
        page.close()
