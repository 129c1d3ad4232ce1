"""Sandbox settings and provider error codes from fault documents, over real HTTP: Slack's burst
allowance (a fault file's ``simulators`` section, ``PUT /_sandbox/faults`` and ``antifragile
sandbox --slack-burst``) and WhatsApp Graph codes such as 80007 scripted from a fault file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from antifragile import ConfigurationError, FakeClock, Policy, Retry
from antifragile.connectors import WhatsAppConnector
from antifragile.sandbox import ProviderSandbox, SlackSimulator, WhatsAppSimulator

HOOK = "/services/T00000000/B00000000/XXXXXXXX"
SEND = "POST /{version}/{phone_number_id}/messages"
PHONE = "106540352242922"


async def post_slack(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient() as client:
        return [(await client.post(url, json={"text": "hi"})).status_code for _ in range(n)]


async def test_the_slack_burst_comes_from_a_fault_file(tmp_path: Path) -> None:
    """``{"simulators": {"slack": {"burst": 3}}}`` lets three posts through at once, the
    fourth is 429; the same over ``PUT /_sandbox/faults`` at run time."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"simulators": {"slack": {"burst": 3, "rate": 0.01}}}))
    simulator = SlackSimulator(rate=0.01)
    with ProviderSandbox([simulator], fault_file=faults) as sandbox:
        hook = sandbox.base_url("slack") + HOOK
        assert await post_slack(hook, 4) == [200, 200, 200, 429]
        assert simulator.burst == 3.0
        async with httpx.AsyncClient() as client:
            answer = await client.put(
                f"{sandbox.url}/_sandbox/faults",
                json={"simulators": {"slack": {"burst": 5}}},
            )
            assert answer.status_code == 200
            refused = await client.put(
                f"{sandbox.url}/_sandbox/faults",
                json={"simulators": {"slack": {"burst": 7, "colour": 1}}},
            )
            assert refused.status_code == 400
            assert "colour" in refused.json()["error"]
        assert simulator.burst == 5.0  # the refused document changed nothing


def test_bad_simulator_settings_are_refused() -> None:
    with ProviderSandbox([SlackSimulator()]) as sandbox:
        for bad in (
            {"simulators": {"slack": {"burst": 0}}},
            {"simulators": {"slack": {"burst": True}}},
            {"simulators": {"whatsapp": {"burst": 2}}},
            {"simulators": ["slack"]},
        ):
            with pytest.raises(ConfigurationError):
                sandbox.load_faults(bad)


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"kind": "error", "status": 400, "code": 80007}, 400),
        ({"kind": "rate_limited", "code": 131056}, 400),  # the simulator's throttle_status
    ],
)
async def test_meta_error_codes_are_scripted_from_a_fault_file(
    tmp_path: Path, fault: dict[str, object], status: int
) -> None:
    """A fault with a Graph ``code`` answers in Graph's shape with that code; the connector
    reads it as throttling and sends the message on the next attempt."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"whatsapp": {SEND: {"script": [fault]}}}))
    clock = FakeClock()
    policy = Policy("whatsapp", clock=clock, retry=Retry(attempts=3))
    with ProviderSandbox([WhatsAppSimulator()], fault_file=faults) as sandbox:
        async with WhatsAppConnector(
            "token",
            phone_number_id=PHONE,
            base_url=sandbox.base_url("whatsapp"),
            policy=policy,
            clock=clock,
        ) as whatsapp:
            await whatsapp.send_text("15551234567", "hello")
        first, second = sandbox.requests
        assert (first.status, second.status) == (status, 200)
        assert len(sandbox.effects("whatsapp")) == 1
        plans = sandbox.engine.to_dict()
    assert plans["whatsapp"][SEND]["script"] == []  # played


def test_the_sandbox_command_takes_the_slack_burst() -> None:
    """``antifragile sandbox --slack-burst 2``: two posts at once, the third is 429."""
    command = [sys.executable, "-c", "from antifragile.cli import main; main()", "sandbox"]
    process = subprocess.Popen(
        [
            *command,
            "--port",
            "0",
            "--smtp-port",
            "-1",
            "--slack-burst",
            "2",
            "--slack-rate",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        statuses = [
            httpx.post(f"{url}/slack{HOOK}", json={"text": "hi"}, timeout=30).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # never leave the process (and its pipes) behind
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0


async def test_response_header_names_keep_the_provider_casing() -> None:
    """Clients that look headers up case-sensitively (``shopify.Limits.credit_used()``) find
    ``X-Shopify-Shop-Api-Call-Limit`` and ``X-HubSpot-RateLimit-*`` as the providers write
    them."""
    from antifragile.sandbox import HubSpotSimulator, ShopifySimulator

    with ProviderSandbox([ShopifySimulator(), HubSpotSimulator()]) as sandbox:
        async with httpx.AsyncClient() as client:
            shopify = await client.get(
                f"{sandbox.base_url('shopify')}/admin/api/2025-01/customers/search.json",
                params={"query": "email:ada@example.com"},
                headers={"x-shopify-access-token": "shpat_x"},
            )
            hubspot = await client.get(
                f"{sandbox.base_url('hubspot')}/crm/v3/objects/contacts/1",
                headers={"authorization": "Bearer pat"},
            )
    assert shopify.status_code == 200
    assert b"X-Shopify-Shop-Api-Call-Limit" in dict(shopify.headers.raw)
    names = {name for name, _ in hubspot.headers.raw}
    assert {b"X-HubSpot-RateLimit-Max", b"X-HubSpot-RateLimit-Daily"} <= names
