"""When the service's own PostgreSQL fails: a real server behind a TCP proxy that is cut (every
connection dropped, the port refusing) and restored.

While it is cut, every webhook is answered with the retryable 503 envelope
(``STORE_UNAVAILABLE``) and a ``Retry-After`` -- providers deliver again -- and ``/health`` is
unhealthy. Once it is back the store reconnects by itself, the re-delivered webhooks are
recorded, and nothing acknowledged before the outage is lost. The pool's timeouts come from the
URL (``pool_timeout``, ``connect_timeout``). How fast each step is, is measured by
``benchmarks/postgres_outage.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from antifragile.errors import ConfigurationError
from antifragile.inbound import whatsapp_signature
from antifragile.jobs import InboxEntry, Jobs
from antifragile.sandbox import whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.stores import open_store
from antifragile.stores._postgres import PostgresStore
from tests._service_standin import StandInAssistant, running_server
from tests._waiting import wait_until
from tests.conftest import POSTGRES_URL, require_service
from tests.integration.test_shared_state import Proxy

SECRET = "wa-outage-secret"


def _via(port: int, schema: str, query: str = "") -> str:
    parts = urlsplit(POSTGRES_URL)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = f"{netloc[0]}@" if len(netloc) == 2 else ""
    extra = f"&{query}" if query else ""
    return urlunsplit(
        (parts.scheme, f"{userinfo}127.0.0.1:{port}", parts.path, f"schema={schema}{extra}", "")
    )


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    require_service("postgres", POSTGRES_URL)
    target = urlsplit(POSTGRES_URL)
    made = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    asyncio.run(made.start())
    try:
        yield made
    finally:
        asyncio.run(made.stop())


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        store = await open_store(POSTGRES_URL, schema=name, drop_schema_on_close=True)
        await store.close()

    asyncio.run(drop())


def _inbox(schema: str) -> list[InboxEntry]:
    async def read() -> list[InboxEntry]:
        url = _via(urlsplit(POSTGRES_URL).port or 5432, schema)
        async with Jobs(database_url=url) as jobs:
            return await jobs.queue.find_inbound(limit=1000)

    return asyncio.run(read())


def _known_down(store: PostgresStore) -> bool:
    return store._db.down_since is not None


def _deliver(client: httpx.Client, url: str, message_id: str) -> httpx.Response:
    """One signed WhatsApp delivery of the message *message_id*, as the provider sends it."""
    payload = whatsapp_text_message(from_="447700900123", body="table for 2", message_id=message_id)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": whatsapp_signature(SECRET, body),
    }
    return client.post(f"{url}/v1/webhooks/whatsapp", content=body, headers=headers)


def test_an_outage_answers_503_with_retry_after_and_loses_nothing(
    proxy: Proxy, schema: str
) -> None:
    database_url = _via(proxy.port, schema, "pool_timeout=1&connect_timeout=2")
    settings = Settings.from_env(
        {"ANTIFRAGILE_DATABASE_URL": database_url, "ANTIFRAGILE_WHATSAPP_APP_SECRET": SECRET}
    )
    assistant = StandInAssistant(settings)
    with (
        running_server(create_app(settings, assistant=assistant)) as url,
        httpx.Client() as sender,
    ):
        store = assistant.jobs.queue.store
        assert isinstance(store, PostgresStore)
        assert (store._db.acquire_timeout, store._db.connect_timeout) == (1.0, 2.0)
        before = [f"wamid.before-{n}" for n in range(3)]
        for message_id in before:
            assert _deliver(sender, url, message_id).status_code == 200

        asyncio.run(proxy.stop())
        during = [f"wamid.during-{n}" for n in range(5)]
        for message_id in during:
            delivery = _deliver(sender, url, message_id)
            assert delivery.status_code == 503
            body = delivery.json()
            assert body["success"] is False
            assert body["error"]["code"] == "STORE_UNAVAILABLE"
            assert body["error"]["retryable"] is True
            assert int(delivery.headers["retry-after"]) >= 1
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503
        assert health.json()["data"]["dependencies"]["database"] == "down"
        assert _known_down(store)  # operations now wait briefly for a connection, not 1 s

        asyncio.run(proxy.start())
        # the provider delivers again until it gets a 200
        wait_until(lambda: _deliver(sender, url, during[0]).status_code == 200, interval=0.2)
        assert not _known_down(store)
        for message_id in during[1:]:
            assert _deliver(sender, url, message_id).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200

    recorded = sorted(entry.event_id for entry in _inbox(schema))
    assert recorded == sorted(before + during)  # each once: none lost, none twice


def test_pool_timeouts_come_from_the_url() -> None:
    base = "postgresql://app:pw@db.internal:5432/shop"
    store = PostgresStore(f"{base}?pool_timeout=1.5&connect_timeout=3&reconnect_timeout=4")
    assert (store._db.acquire_timeout, store._db.connect_timeout) == (1.5, 3.0)
    assert store._db.reconnect_timeout == 4.0
    assert "pool_timeout" not in store._db.conninfo
    assert PostgresStore(f"{base}?pool_timeout=1", acquire_timeout=7)._db.acquire_timeout == 7.0
    defaults = PostgresStore(base)._db
    assert (defaults.acquire_timeout, defaults.connect_timeout) == (10.0, 5.0)
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigurationError, match="pool_timeout"):
            PostgresStore(f"{base}?pool_timeout={bad}")
