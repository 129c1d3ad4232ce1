"""A tenant's own email chain, sender and Mailchimp audience, run as action sagas through a
real SQLite queue and a Worker against the sandbox (Mandrill, Resend, Mailchimp) over real HTTP.

The sandbox's effect log is the ground truth for which provider sent what, and how often.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.connectors import Connectors, correlation_for, idempotency_key_for
from antifragile.inbound import (
    Actions,
    DeliveryStatus,
    DeliveryStatuses,
    Echoes,
    Handlers,
    MessageContext,
    Tenant,
)
from antifragile.jobs import Jobs
from antifragile.sandbox import (
    MailchimpSimulator,
    MandrillSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
)
from antifragile.service._checks import check_tenant_email
from tests.integration.test_actions import BOOKING, EMAIL, TENANT, Run

MANDRILL_KEY = "md-tenant-key"
RESEND_KEY = "re_tenant_key_123"
MAILCHIMP_KEY = "0123456789abcdef-us21"
AUDIENCE = "corner-list"
SEND = "POST /messages/send"
SEARCH = "POST /messages/search"
SHOP = Tenant(
    TENANT.id,
    name="Corner Shop",
    whatsapp_phone_number_id="1234",
    owner_email="owner@shop.example",
    email_chain="mandrill,resend",
    email_from="Corner Shop <hello@shop.example>",
    mailchimp_list_id=AUDIENCE,
)


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulators = [
        MandrillSimulator(api_keys=[MANDRILL_KEY]),
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=1000),
        MailchimpSimulator(api_keys=[MAILCHIMP_KEY], lists=[AUDIENCE]),
    ]
    with ProviderSandbox(simulators) as running:
        yield running


@pytest.fixture
async def connectors(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connectors]:
    built = Connectors(
        base_urls={p: sandbox.base_url(p) for p in ("mandrill", "resend", "mailchimp")},
        options={
            "mandrill": {"api_key": MANDRILL_KEY},
            "resend": {"api_key": RESEND_KEY},
            "mailchimp": {"api_key": MAILCHIMP_KEY},
        },
        clock=clock,
        timeout=5.0,
    )
    yield built
    await built.aclose()


@pytest.fixture
async def jobs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'tenant.db'}", clock=clock) as opened:
        yield opened


@pytest.fixture
def handlers() -> Handlers:
    registry = Handlers()
    registry.register_defaults(booking=BOOKING)

    @registry.on_message("LEAD", actions=["send_email", "add_to_audience"], name="lead")
    async def lead(ctx: MessageContext) -> str:
        return "Thanks!"

    return registry


@pytest.fixture
def deliveries(jobs: Jobs, clock: FakeClock) -> DeliveryStatuses:
    return DeliveryStatuses(jobs, clock=clock)


@pytest.fixture
def run(
    jobs: Jobs,
    handlers: Handlers,
    connectors: Connectors,
    deliveries: DeliveryStatuses,
    clock: FakeClock,
) -> Run:
    actions = Actions(
        connectors, tenants={SHOP.id: SHOP}, booking=BOOKING, echoes=Echoes(deliveries)
    )
    return Run(jobs, handlers, actions, clock)


async def test_the_tenants_chain_sender_and_audience(run: Run, sandbox: ProviderSandbox) -> None:
    """``send_email`` goes through the tenant's chain (Mandrill first) from its own address;
    ``add_to_audience`` puts the contact in its audience, pending their confirmation."""
    result, job, _, _ = await run.message(f"I'm interested, reach me at {EMAIL}", handler="lead")
    assert result.status == "completed", result
    (email,) = sandbox.effects("mandrill")
    assert (email.data["from_email"], email.data["from_name"]) == (
        "hello@shop.example",
        "Corner Shop",
    )
    assert email.data["to"] == [{"email": "owner@shop.example", "type": "to"}]
    key = idempotency_key_for("send-email", f"saga:{job.id}:1")
    assert email.idempotency_key == correlation_for(key)
    assert sandbox.effects("resend") == []
    assert result.results["send_email"]["provider"] == "mandrill"
    member = result.results["add_to_audience"]
    assert (member["list_id"], member["status"]) == (AUDIENCE, "pending")
    (added,) = sandbox.effects("mailchimp")
    assert added.data["email_address"] == EMAIL
    assert added.data["merge_fields"] == {"FNAME": "Ada"}


async def test_a_lost_answer_at_mandrill_is_settled_by_its_webhook_echo(
    run: Run, sandbox: ProviderSandbox, deliveries: DeliveryStatuses
) -> None:
    """Mandrill's answer is lost: the email job waits (deferred, Resend never asked); the
    ``send`` event of Mandrill's webhook, carrying the send's correlation, settles it as sent
    -- no lookup needed, one email overall."""
    sandbox.faults("mandrill", SEND, script=[ProviderFault.ambiguous()])
    job_id, _, _ = await run.begin(f"Reach me at {EMAIL}", handler="lead")
    key = idempotency_key_for("send-email", f"saga:{job_id}:1")
    await deliveries.record(
        DeliveryStatus(
            provider="mandrill",
            event_id="m-1:send:1",
            status="sent",
            provider_status="send",
            provider_message_id="m-1",
            correlation=correlation_for(key),
        )
    )
    job = await run.settle(job_id)
    assert job.result is not None
    assert job.result["results"]["send_email"]["provider"] == "mandrill"
    assert len(sandbox.effects("mandrill")) == 1
    assert sandbox.effects("resend") == []
    assert not [r for r in sandbox.requests if r.path.endswith("/messages/search")]


def test_tenant_email_settings_are_checked_at_start() -> None:
    """A chain naming a provider that cannot send email (or one twice), a sender that is not
    an address and an empty audience stop the start, naming the tenant."""
    check_tenant_email([SHOP, Tenant("plain")])
    for bad, words in (
        (Tenant("a", email_chain="mandrill,slack"), "slack cannot send email"),
        (Tenant("b", email_chain="smtp,smtp"), "twice"),
        (Tenant("c", email_chain=" "), "empty"),
        (Tenant("d", email_from="Corner Shop"), "not an email address"),
        (Tenant("e", mailchimp_list_id=""), "mailchimp_list_id"),
    ):
        with pytest.raises(ConfigurationError, match=words) as caught:
            check_tenant_email([bad])
        assert repr(bad.id) in str(caught.value)
