"""The operator's dashboard end to end: a real uvicorn server (API + worker, SQLite), a job that
really dies, and headless Chromium (the Debian package) driven by Playwright.

Chromium is ``/usr/bin/chromium``; without it the browser test skips, or fails in CI
(``CI=true``) with the command that installs it. Set ``ANTIFRAGILE_UPDATE_SCREENSHOTS=1`` to
write the documentation's screenshots (``docs/assets/dashboard*.png``) again.
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
from antifragile.jobs import JobContext, JobFunction, NewInboxEntry
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
ASSETS = Path(__file__).resolve().parents[2] / "docs" / "assets"
#: the documentation's screenshots: the page at a desktop's and a phone's width, a job's page
SCREENSHOTS = {
    1280: ASSETS / "dashboard.png",
    390: ASSETS / "dashboard-phone.png",
}
JOB_SCREENSHOT = ASSETS / "dashboard-job.png"
PHONE_CARD_SCREENSHOT = ASSETS / "dashboard-phone-card.png"


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
            # with a long unbroken token, as a provider's request id is: it must wrap on a phone
            raise UpstreamUnavailableError(f"the CRM answered 503 [trace={'0f' * 40}]")
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
                # kept in the inbox as a webhook would leave it (no processing job), and handled
                entry = NewInboxEntry(
                    channel=event.channel.value,
                    event_id=event.event_id,
                    kind=event.kind.value,
                    tenant_key=event.tenant_key,
                    payload=event.to_json(),
                    ttl=3600.0,
                    job=None,
                )
                await setup.jobs.queue.record_inbound([entry], now=setup.jobs.clock.time())
                await setup.sessions.handle(tenant, event)
        await setup.tasks.create(
            type="support_ticket",
            title=f"Call back {PHONE} about the booking",
            priority="high",
            key="seed-task",
        )
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
        contacts = ["c-browser", "c-http", "c-resolve", "c-layout", "c-page", "c-bulk1", "c-bulk2"]
        contacts += ["c-bulk3"]
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


# -- the job page, bulk actions, the conversation ----------------------------------------------


def test_a_job_page_shows_attempts_masked_payload_and_acts_on_the_job(
    dashboard: Dashboard,
) -> None:
    """/dashboard/jobs/{id}: the job's state, every attempt with its error code and message,
    its payload, and Retry / Resolve buttons that come back to the same page; it needs a
    session; an unknown id is a 404 page."""
    job_id = dashboard.dead["c-page"]
    with httpx.Client(base_url=dashboard.url, timeout=10) as anonymous:
        refused = anonymous.get(f"/dashboard/jobs/{job_id}")
        assert refused.status_code == 303
        assert refused.headers["location"] == "/dashboard/login"
    with signed_in(dashboard) as (client, _, csrf):
        page = client.get(f"/dashboard/jobs/{job_id}")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        attempts = page.text[page.text.index('id="job-attempts"') :]
        assert "UPSTREAM_UNAVAILABLE" in attempts.split("</section>")[0]
        assert "the CRM answered 503" in attempts.split("</section>")[0]
        assert "c-page" in page.text[page.text.index('id="job-payload"') :]
        assert f'action="/dashboard/dlq/{job_id}/retry"' in page.text
        assert 'name="back" value="job"' in page.text
        assert client.get("/dashboard/jobs/no-such-job").status_code == 404
        retried = client.post(f"/dashboard/dlq/{job_id}/retry", data={"csrf": csrf, "back": "job"})
        assert retried.status_code == 303
        assert retried.headers["location"] == f"/dashboard/jobs/{job_id}?notice=retried"
        wait_for(lambda: state_of(dashboard, job_id) == "succeeded", what="the redrive to run")
        after = client.get(retried.headers["location"]).text
        assert "The job is back in the queue." in after
        assert "state-succeeded" in after
        assert f'action="/dashboard/dlq/{job_id}/retry"' not in after  # not dead: no actions


def test_bulk_retry_and_resolve_ask_for_confirmation_first(dashboard: Dashboard) -> None:
    """Ticking jobs and pressing Retry selected answers a confirmation page listing them
    (nothing changed yet); its button retries them. Resolve needs a reason on that page. A
    bulk post without the session's CSRF token is a 403."""
    first, second = dashboard.dead["c-bulk1"], dashboard.dead["c-bulk2"]
    third = dashboard.dead["c-bulk3"]
    with signed_in(dashboard) as (client, _, csrf):
        fragment = client.get("/dashboard/panels").text
        assert 'form="bulk"' in fragment
        assert f'value="{first}"' in fragment
        forged = client.post("/dashboard/dlq/bulk", data={"action": "retry", "id": first})
        assert forged.status_code == 403
        ask = client.post(
            "/dashboard/dlq/bulk",
            data={"csrf": csrf, "action": "retry", "id": [first, second]},
        )
        assert ask.status_code == 200
        assert "Retry 2 dead jobs?" in ask.text
        assert f'data-job-id="{first}"' in ask.text
        assert f'data-job-id="{second}"' in ask.text
        assert 'name="confirm" value="1"' in ask.text
        assert (state_of(dashboard, first), state_of(dashboard, second)) == ("dead", "dead")
        done = client.post(
            "/dashboard/dlq/bulk",
            data={"csrf": csrf, "action": "retry", "confirm": "1", "id": [first, second]},
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard?notice=bulk_retried"
        wait_for(
            lambda: {state_of(dashboard, first), state_of(dashboard, second)} == {"succeeded"},
            what="the redriven jobs to run",
        )
        unreasoned = client.post(
            "/dashboard/dlq/bulk",
            data={"csrf": csrf, "action": "resolve", "confirm": "1", "id": third},
        )
        assert unreasoned.status_code == 200  # the confirmation again, asking for the reason
        assert 'name="reason" required' in unreasoned.text
        assert state_of(dashboard, third) == "dead"
        resolved = client.post(
            "/dashboard/dlq/bulk",
            data={
                "csrf": csrf,
                "action": "resolve",
                "confirm": "1",
                "reason": "synced by hand",
                "id": third,
            },
        )
        assert resolved.headers["location"] == "/dashboard?notice=bulk_resolved"
        assert state_of(dashboard, third) == "resolved"
        nothing = client.post("/dashboard/dlq/bulk", data={"csrf": csrf, "action": "retry"})
        assert nothing.headers["location"] == "/dashboard?notice=none"


def test_the_conversation_view_shows_messages_and_replies_masked(dashboard: Dashboard) -> None:
    """A session's link opens its conversation: the customer's messages and the replies with
    their status, oldest first, with the number and the email in a message masked."""
    sessions = dashboard.admin.get("/v1/admin/sessions").json()["data"]["items"]
    (session,) = [s for s in sessions if s.get("channel") == "whatsapp"]
    with signed_in(dashboard) as (client, _, _csrf):
        fragment = client.get("/dashboard/panels").text
        assert f"/dashboard/sessions/{session['key'].replace(':', '%3A')}" in fragment
        page = client.get(f"/dashboard/sessions/{session['key']}")
        assert page.status_code == 200
        text = page.text
        assert PHONE not in text
        assert EMAIL not in text
        assert "a•••@example.com" in text
        assert text.index("Hello there") < text.index("Ada Lovelace")
        assert 'data-direction="out"' in text
        assert REPLY in text
        assert client.get("/dashboard/sessions/session:nobody").status_code == 404


def test_the_panels_show_graphs_workers_and_tasks(dashboard: Dashboard) -> None:
    """The fragment draws three inline SVG graphs (no script, no external URL), a workers
    panel (or its "no data" line) and the operator tasks with phone numbers masked."""
    fragment = dashboard.admin.get("/dashboard/panels").text
    for graph in ("graph-throughput", "graph-failures", "graph-lag"):
        block = fragment[fragment.index(f'id="{graph}"') :].split("</figure>")[0]
        assert "<svg" in block
    failures = fragment[fragment.index('id="graph-failures"') :].split("</figure>")[0]
    assert 'class="bar bar-bad"' in failures  # the seeded jobs failed within the hour
    assert "<script" not in fragment
    assert 'href="http' not in fragment
    workers = fragment[fragment.index('<section id="workers">') :].split("</section>")[0]
    assert "<table>" in workers or "No data" in workers
    tasks = fragment[fragment.index('<section id="tasks">') :].split("</section>")[0]
    assert "support_ticket" in tasks
    assert PHONE not in tasks
    assert "+4477" in tasks


# -- the page at a desktop's and a phone's width ---------------------------------------------------


def sign_in(page: Any, dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    page.goto(f"{dashboard.url}/dashboard/login")
    page.fill("#api_key", ADMIN_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def assert_fits(page: Any, width: int, where: str) -> None:
    """Nothing scrolls the page sideways, and every visible button is inside the viewport --
    measured once the page has loaded: a stylesheet still on its way (a busy machine) would
    leave the tables unstyled, wider than the screen."""
    page.wait_for_load_state("load")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(
        """(width) => Array.from(document.querySelectorAll("body *"))
            .filter((e) => e.getBoundingClientRect().right > width + 0.5)
            .filter((e) => !Array.from(e.children).some(
                (c) => c.getBoundingClientRect().right > width + 0.5))
            .slice(0, 5).map((e) => e.outerHTML.slice(0, 120))""",
        width,
    )
    assert scroll_width <= width, f"{where}: {scroll_width}px wide at {width}px: {wide}"
    boxes = page.evaluate(
        """() => Array.from(document.querySelectorAll("button, summary"))
            .filter((e) => e.getClientRects().length > 0)
            .map((e) => { const r = e.getBoundingClientRect();
                          return [e.textContent.trim(), r.left, r.right]; })"""
    )
    assert boxes, f"{where}: no button on the page"
    outside = [box for box in boxes if box[1] < 0 or box[2] > width]
    assert not outside, f"{where}: buttons outside the {width}px viewport: {outside}"


@pytest.mark.parametrize("width", sorted(SCREENSHOTS, reverse=True))
def test_the_dashboard_fits_a_desktop_and_a_phone(
    dashboard: Dashboard, browser: Browser, width: int
) -> None:
    """At 1280 px and at 390 px the page, a job's page and a conversation are no wider than
    the screen and every button (Retry, Resolve, the bulk actions, Sign out) is on it; the
    documentation's screenshots are taken here."""
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    job_id = dashboard.dead["c-layout"]
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        sign_in(page, dashboard)
        row = page.locator(f'#dlq tr[data-job-id="{job_id}"]')
        expect(row.get_by_role("button", name="Retry")).to_be_visible()
        expect(page.locator("#graph-throughput svg")).to_be_visible()
        assert_fits(page, width, "the dashboard")
        shot = SCREENSHOTS[width]
        if os.environ.get("ANTIFRAGILE_UPDATE_SCREENSHOTS") or not shot.exists():
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=width > 400)
            if width < 400:  # a dead job's card, its buttons on the screen
                row.screenshot(path=str(PHONE_CARD_SCREENSHOT))
        row.locator("summary").click()  # the Resolve form opens inside the row
        expect(row.locator('input[name="reason"]')).to_be_visible()
        assert_fits(page, width, "the dashboard with a Resolve form open")
        row.locator("a").first.click()
        expect(page).to_have_url(re.compile(rf"/dashboard/jobs/{job_id}$"))
        expect(page.locator("#job-attempts")).to_contain_text("UPSTREAM_UNAVAILABLE")
        assert_fits(page, width, "a job's page")
        if width > 400 and (
            os.environ.get("ANTIFRAGILE_UPDATE_SCREENSHOTS") or not JOB_SCREENSHOT.exists()
        ):
            page.screenshot(path=str(JOB_SCREENSHOT), full_page=True)
        page.goto(f"{dashboard.url}/dashboard")
        page.locator("#sessions a").first.click()
        expect(page.locator("#conversation .turn").first).to_be_visible()
        assert_fits(page, width, "a conversation")
    finally:
        page.close()


def test_the_api_reference_renders_offline_in_a_browser(
    dashboard: Dashboard, browser: Browser
) -> None:
    """/docs in Chromium with every request to another host refused: nothing is asked of
    another host, and every operation of /openapi.json is on the page."""
    from playwright.sync_api import expect

    schema = dashboard.admin.get("/openapi.json").json()
    count = sum(
        1
        for item in schema["paths"].values()
        for method in item
        if method in ("get", "head", "post", "put", "patch", "delete")
    )
    local = dashboard.url.split("//", 1)[1].split("/", 1)[0]
    elsewhere: list[str] = []

    def only_local(route: Any) -> None:
        url = route.request.url
        if url.split("//", 1)[-1].split("/", 1)[0] == local:
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.route("**/*", only_local)
        page.goto(f"{dashboard.url}/docs")
        operations = page.locator("article.operation")
        expect(operations).to_have_count(count)
        expect(page.locator('[data-operation="get /v1/admin/dlq"] .summary')).to_have_text(
            "List dead jobs"
        )
        expect(page.locator("#model-JobView")).to_contain_text("history")
        color = page.evaluate(
            "getComputedStyle(document.querySelector('.method-get')).backgroundColor"
        )
        assert color != "rgba(0, 0, 0, 0)"  # the package's style sheet applied
        assert elsewhere == []
    finally:
        page.close()
