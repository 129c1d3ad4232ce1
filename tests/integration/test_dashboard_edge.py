"""Dashboard sessions against the attacks that got through: a session that outlived the
bootstrap key it was opened with, a read-only key pressing buttons, unlimited login guesses,
and a cookie without ``Secure`` behind https.

The real app (its middleware, its routes) over a real SQLite file through
``httpx.ASGITransport``; time is a FakeClock. ``GET /dashboard/login`` redirects to the page
exactly when the cookie's session is alive, which is how a session is probed here.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from antifragile import FakeClock
from antifragile.service import Settings, create_app
from antifragile.service._dashboard import COOKIE
from antifragile.service._login import FREE_FAILURES
from tests._service_standin import StandInAssistant
from tests.conftest import REDIS_URL, require_service

KEY_A = "Dashboard-Key-A-9f3Qz7LmT2"
KEY_B = "Dashboard-Key-B-4xWv8RnK1p"


class Service:
    """Starts (and restarts) the app over one database with the keys given each time."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(wall_offset=1_700_000_000.0)
        self.opened: list[StandInAssistant] = []

    async def start(self, *keys: str, **env: str) -> FastAPI:
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{self.tmp_path / 'dash.db'}",
                "ANTIFRAGILE_ADMIN_API_KEYS": ",".join(keys),
                **env,
            }
        )
        assistant = StandInAssistant(settings, clock=self.clock)
        await assistant.open()
        self.opened.append(assistant)
        return create_app(settings, assistant=assistant, clock=self.clock)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    made = Service(tmp_path)
    yield made
    for assistant in made.opened:
        await assistant.close()


def _client(app: FastAPI, base_url: str = "http://dash.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url)


async def _login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/dashboard/login", data={"api_key": key})


async def _alive(app: FastAPI, cookie: str) -> bool:
    async with _client(app) as client:
        client.cookies.set(COOKIE, cookie, domain="dash.test", path="/dashboard")
        probe = await client.get("/dashboard/login")
    return probe.status_code == 303


async def test_a_session_ends_when_its_bootstrap_key_is_removed(service: Service) -> None:
    """Opened with key A while A and B are configured, the session survives a restart with A
    still there, and ends at the first request after a restart without A -- even though B,
    another bootstrap key, is still configured; a session of B lives on."""
    app = await service.start(KEY_A, KEY_B)
    cookies = {}
    for key in (KEY_A, KEY_B):
        async with _client(app) as client:
            assert (await _login(client, key)).status_code == 303
            cookies[key] = client.cookies[COOKIE]
    assert await _alive(await service.start(KEY_B, KEY_A), cookies[KEY_A])
    restarted = await service.start(KEY_B)
    assert not await _alive(restarted, cookies[KEY_A])
    assert await _alive(restarted, cookies[KEY_B])
    # and A coming back does not revive the session: it was deleted
    assert not await _alive(await service.start(KEY_A, KEY_B), cookies[KEY_A])


async def test_a_read_key_cannot_press_the_dashboards_buttons(service: Service) -> None:
    """A stored key with only the read scope signs in and reads, but its retry is 403
    FORBIDDEN (by session or by header); an operate key gets past the scope check."""
    app = await service.start(KEY_A)
    async with _client(app) as admin:
        keys = {}
        for scope in ("read", "operate"):
            made = await admin.post(
                "/v1/admin/api-keys",
                json={"name": scope, "scopes": [scope]},
                headers={"x-api-key": KEY_A},
            )
            keys[scope] = made.json()["data"]["key"]
    for scope, key in keys.items():
        async with _client(app) as client:
            response = await client.post(
                "/dashboard/dlq/nope/retry",
                headers={"x-api-key": key, "accept": "application/json"},
            )
            if scope == "read":
                assert response.status_code == 403, response.text
                assert response.json()["error"]["code"] == "FORBIDDEN"
            else:
                assert response.status_code == 404, response.text


async def test_login_guesses_back_off_per_address_and_per_account(service: Service) -> None:
    """Five wrong keys from one address are answered 401; the sixth guess waits (429 with
    Retry-After), and each failure after doubles the wait; the right key is refused too while
    locked, then accepted once the clock passes the lockout. Guesses at one stored key's id
    from many addresses lock that account."""
    app = await service.start(KEY_A)
    async with _client(app) as client:
        for _ in range(FREE_FAILURES):
            assert (await _login(client, "wrong-key-0123456789")).status_code == 401
        locked = await _login(client, "wrong-key-0123456789")
        assert locked.status_code == 401  # the failure that starts the lockout
        refused = await _login(client, KEY_A)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert refused.headers["retry-after"] == "1"
        service.clock.advance(1)
        assert (await _login(client, "wrong-key-0123456789")).status_code == 401
        assert (await _login(client, KEY_A)).headers["retry-after"] == "2"
        service.clock.advance(2)
        assert (await _login(client, KEY_A)).status_code == 303
        assert (await _login(client, "wrong-key-0123456789")).status_code == 401  # reset
    await app.state.login_throttle.succeeded("127.0.0.1", None)
    guess = "af_0123456789abcdef_guess"
    for n in range(FREE_FAILURES + 1):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=(f"10.0.0.{n + 1}", 1000)),
            base_url="http://dash.test",
        ) as client:
            assert (await _login(client, guess)).status_code == 401
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("10.0.1.1", 1000)), base_url="http://dash.test"
    ) as fresh:
        assert (await _login(fresh, guess)).status_code == 429
        assert (await _login(fresh, KEY_A)).status_code == 303  # the address is not locked


@pytest.mark.parametrize(
    ("base_url", "public_url", "secure"),
    [
        ("http://dash.test", "", False),
        ("https://dash.test", "", True),
        ("http://dash.test", "https://assistant.example.com", True),
    ],
)
async def test_the_session_cookie_is_secure_over_tls_or_an_https_public_url(
    service: Service, base_url: str, public_url: str, secure: bool
) -> None:
    env = {"ANTIFRAGILE_PUBLIC_URL": public_url} if public_url else {}
    app = await service.start(KEY_A, **env)
    async with _client(app, base_url) as client:
        login = await _login(client, KEY_A)
    assert login.status_code == 303
    assert ("secure" in login.headers["set-cookie"].lower()) is secure


async def test_login_backoff_is_shared_by_every_api_process(service: Service) -> None:
    """Two API processes (two apps, each with its own connection to the shared-state store,
    Redis here) count one address's failures together: a guesser alternating between them
    is locked after the same five failures as against one, and the lockout holds on both."""
    require_service("redis", REDIS_URL)
    one = await service.start(KEY_A, ANTIFRAGILE_REDIS_URL=REDIS_URL)
    two = await service.start(KEY_A, ANTIFRAGILE_REDIS_URL=REDIS_URL)
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"

    def client(app: FastAPI) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=(address, 1000)), base_url="http://dash.test"
        )

    for n in range(FREE_FAILURES + 1):
        async with client((one, two)[n % 2]) as guesser:
            assert (await _login(guesser, "wrong-key-0123456789")).status_code == 401
    for app in (one, two):
        async with client(app) as guesser:
            refused = await _login(guesser, KEY_A)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
    service.clock.advance(1)
    async with client(two) as guesser:
        assert (await _login(guesser, KEY_A)).status_code == 303  # and the failures forgotten
    async with client(one) as guesser:
        assert (await _login(guesser, "wrong-key-0123456789")).status_code == 401
