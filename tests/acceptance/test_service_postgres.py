"""Scaling out on PostgreSQL: ``antifragile serve --no-worker --no-scheduler`` takes the
webhooks, two ``antifragile worker`` processes do the work, all on one PostgreSQL schema, with
every provider behind the sandbox over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from antifragile.sandbox import (
    ProviderSandbox,
    WebhookSender,
    whatsapp_text_message,
)
from tests._service_standin import free_port
from tests.acceptance.test_service_e2e import (
    ADMIN_KEY,
    ANSWERS,
    APP_SECRET,
    OWNER,
    PHONE_ID,
    sandbox_env,
    simulators,
    wait_for,
)

LAUNCH = "from antifragile.cli import main; main()"


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    name = f"svc_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out + err


def test_api_and_two_workers_on_postgres_run_each_integration_once(
    tmp_path: Path, postgres_url: str, schema: str
) -> None:
    """Two customers complete the intake through the API process; two separate worker
    processes share the jobs: ten replies, and one email, customer, contact and Slack post per
    customer at the providers."""
    config = tmp_path / "antifragile.toml"
    config.write_text(
        f'[tenants.acme]\nwhatsapp_phone_number_id = "{PHONE_ID}"\nowner_email = "{OWNER}"\n'
    )
    port = free_port()
    with ProviderSandbox(simulators()) as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANTIFRAGILE_")},
            "ANTIFRAGILE_DATABASE_URL": f"{postgres_url}?schema={schema}",
            "ANTIFRAGILE_CONFIG": str(config),
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
            "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
            **sandbox_env(sandbox),
        }

        def spawn(*args: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-c", LAUNCH, *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        api = spawn("serve", "--port", str(port), "--no-worker", "--no-scheduler")
        workers = [spawn("worker", "--concurrency", "4", "--poll-interval", "0.05")]
        workers.append(spawn("worker", "--concurrency", "4", "--poll-interval", "0.05"))
        processes = [api, *workers]
        url = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                assert api.poll() is None, _stop(api)
                try:
                    return httpx.get(f"{url}/ready", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=30, what="the API process")
            # distinct emails: Shopify and HubSpot deduplicate customers by email
            scripts = {
                phone: ["Hello there", ANSWERS[0], email, *ANSWERS[2:]]
                for phone, email in [
                    ("447700900111", "ada@example.com"),
                    ("447700900222", "grace@example.com"),
                ]
            }
            with WebhookSender(timeout=30.0) as sender:
                for step in range(len(ANSWERS) + 1):
                    for phone, script in scripts.items():
                        text = script[step]
                        delivery = sender.send_whatsapp(
                            f"{url}/v1/webhooks/whatsapp",
                            whatsapp_text_message(from_=phone, body=text, phone_number_id=PHONE_ID),
                            app_secret=APP_SECRET,
                        )
                        assert delivery.status == 200, delivery.response
                    time.sleep(0.3)  # answers of one customer arrive in order
            counts = {"whatsapp": 10, "resend": 2, "shopify": 2, "hubspot": 2, "slack": 2}
            try:
                wait_for(
                    lambda: all(len(sandbox.effects(p)) >= n for p, n in counts.items()),
                    timeout=60,
                    what="every effect",
                )
            except AssertionError:
                seen = {p: len(sandbox.effects(p)) for p in counts}
                tails = "\n".join(_stop(process)[-3000:] for process in processes)
                raise AssertionError(f"effects {seen}\n{tails}") from None
            time.sleep(0.5)
            assert {p: len(sandbox.effects(p)) for p in counts} == counts
        finally:
            logs = [_stop(process) for process in processes]
        for log in logs:
            assert "Traceback" not in log, log
