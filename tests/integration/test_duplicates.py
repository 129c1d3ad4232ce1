"""Duplicate effects through durable jobs, provider by provider, under ambiguous failures.

Each test runs one scenario of ``benchmarks/duplicates.py`` (:func:`measure`): durable jobs on a
real SQLite queue, worked by a :class:`~antifragile.jobs.Worker`, each performing one operation
through the provider's connector with its default policy, against the provider's simulator over
real HTTP (SMTP: the sandbox's SMTP server), while every request to the operation's endpoint
draws 30% ambiguous failures (the provider acts, the answer is lost) and 10% 5xx (SMTP: 451)
without effect. The sandbox's effect record is the ground truth. Back-offs, limiter waits and
the jobs' retry delays run on fake clocks.

Resend, Shopify, HubSpot and Twilio (reconciled from its message log) run the issue's 500
operations and must record exactly 500 effects. The providers that cannot be reconciled
automatically run 200 operations here (500 in the benchmark, whose figures the provider pages
quote) and must record no duplicate, with every operation either delivered or dead-lettered as
``OutcomeUnknownError`` for review -- none lost silently. With status webhooks on (WhatsApp,
Twilio, SendGrid, Cal.com; 60 operations, as every one is a round trip through the service),
an unknown outcome waits for its echo: exactly one effect per operation and at most 1% for
review.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.duplicates import Figures, measure

pytestmark = pytest.mark.slow


def _show(figures: Figures, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\n{figures.provider} {figures.strategy}: {figures.operations} operations, "
            f"{figures.effects} effects, {figures.duplicates} duplicates, "
            f"{figures.review} marked for review ({figures.review_sent} had been sent), "
            f"{figures.other_dead} other dead [{figures.seconds:.1f} s]"
        )


def _chaos_happened(figures: Figures) -> None:
    assert figures.faults_ambiguous is not None
    assert figures.faults_ambiguous > figures.operations // 5  # the chaos really happened


@pytest.mark.parametrize(
    "provider", ["resend", "shopify", "hubspot", "twilio", "mailchimp", "acuity"]
)
async def test_exactly_500_effects_for_500_operations(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """500 operations through durable jobs with 30% ambiguous failures and 10% 5xx: Resend
    (idempotency key), Shopify, HubSpot and Mailchimp (the email as natural key) replay safely,
    Twilio looks an ambiguous send up in its message log before sending again, Acuity looks the
    appointment up by email and time before booking and after a lost answer -- and the sandbox
    records exactly 500 effects, one per operation, every job succeeded, none dead-lettered."""
    figures = await measure(provider, operations=500, directory=tmp_path)
    _show(figures, capsys)
    assert figures.effects == 500
    assert figures.delivered == 500
    assert figures.duplicates == 0
    assert figures.succeeded == 500
    assert figures.review == figures.other_dead == figures.lost == 0
    _chaos_happened(figures)


@pytest.mark.parametrize(
    "provider", ["whatsapp", "slack", "sendgrid", "smtp", "calcom", "mandrill"]
)
async def test_no_duplicate_and_nothing_lost_without_idempotency(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Providers without an idempotency key or a lookup the connector can use: with the
    default policy no operation takes effect twice; an operation whose outcome is unknown is
    dead-lettered as OutcomeUnknownError (marked for review, not resent); every operation is
    either delivered or marked for review -- none lost silently."""
    figures = await measure(provider, operations=200, directory=tmp_path)
    _show(figures, capsys)
    assert figures.duplicates == 0
    assert figures.effects == figures.delivered
    assert figures.lost == 0
    assert figures.other_dead == 0
    assert figures.succeeded + figures.review == 200
    assert figures.review > 0  # the ambiguous ones were flagged, not guessed
    assert figures.review_sent <= figures.review
    _chaos_happened(figures)


@pytest.mark.parametrize("provider", ["twilio", "slack"])
async def test_blind_resend_duplicates_what_the_default_policy_does_not(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The naive job -- send again after an unknown outcome (Twilio without reconciliation) --
    delivers every operation but duplicates about a third of them: the baseline the default
    policy is measured against."""
    figures = await measure(provider, strategy="blind_resend", operations=200, directory=tmp_path)
    _show(figures, capsys)
    assert figures.delivered == 200
    assert figures.duplicates > 200 // 5
    assert figures.review == 0


@pytest.mark.parametrize("provider", ["whatsapp", "twilio", "sendgrid", "calcom", "mandrill"])
async def test_with_status_webhooks_unknown_outcomes_settle_by_their_echo(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the sandbox posting its signed status webhooks to the service, a job whose outcome
    is unknown waits for the echo of its correlation instead of going to review: 60 operations
    under the same chaos (about 18 of them with an unknown outcome) record exactly 60 effects --
    no duplicate, none lost -- and at most 1% are marked for review (none of 60). The
    benchmark (``--status-webhooks``) runs 500."""
    operations = 60
    figures = await measure(provider, strategy="echo", operations=operations, directory=tmp_path)
    _show(figures, capsys)
    assert figures.effects == figures.delivered == operations
    assert figures.duplicates == figures.lost == 0
    assert figures.review <= operations // 100
    assert figures.succeeded == operations - figures.review
    _chaos_happened(figures)
