"""The demo's fault scripts and customers: pure data, checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from antifragile.demo import DEFAULT_SCRIPT, FaultScript, load_fault_script, make_customers
from antifragile.errors import ConfigurationError


def test_the_default_script_plays_every_fault_the_demo_promises() -> None:
    """Shopify 503, Resend 429 with Retry-After, HubSpot ambiguous timeouts, a WhatsApp
    outage and a worker restart, all before the recovery."""
    kinds = {
        (w.provider, c["kind"]) for w in DEFAULT_SCRIPT.faults for c in w.plan.get("chaos", [])
    }
    assert ("shopify", "error") in kinds
    assert ("resend", "rate_limited") in kinds
    assert ("hubspot", "ambiguous") in kinds
    assert ("whatsapp", "error") in kinds
    assert DEFAULT_SCRIPT.worker_restarts
    webhooks = {
        c["kind"]
        for w in DEFAULT_SCRIPT.faults
        if w.provider == "whatsapp" and w.endpoint == "webhooks"
        for c in w.plan.get("chaos", [])
    }
    assert webhooks >= {"delayed", "lost", "duplicated"}
    statuses = {
        c.get("status")
        for w in DEFAULT_SCRIPT.faults
        if w.provider == "whatsapp" and w.endpoint != "webhooks"
        for c in w.plan.get("chaos", [])
    }
    assert statuses >= {500, 503}
    assert DEFAULT_SCRIPT.recovery == max(w.end for w in DEFAULT_SCRIPT.faults)


def test_scaling_a_script_scales_every_time() -> None:
    """``scaled(0.5)`` halves every window and restart time, and leaves the faults alone."""
    half = DEFAULT_SCRIPT.scaled(0.5)
    for before, after in zip(DEFAULT_SCRIPT.faults, half.faults, strict=True):
        assert after.start == pytest.approx(before.start / 2)
        assert after.end == pytest.approx(before.end / 2)
        assert after.plan == before.plan
    assert half.recovery == pytest.approx(DEFAULT_SCRIPT.recovery / 2)


def test_a_script_round_trips_through_its_dict_shape() -> None:
    """``to_dict`` writes what ``from_dict`` reads."""
    again = FaultScript.from_dict(DEFAULT_SCRIPT.to_dict())
    assert again == DEFAULT_SCRIPT


def test_document_gives_fresh_plans_by_provider_and_endpoint() -> None:
    """Each window becomes a FaultPlan with its window; seeds differ per window."""
    document = DEFAULT_SCRIPT.document(seed=5)
    plans = [p for by_endpoint in document.values() for ps in by_endpoint.values() for p in ps]
    assert len(plans) == len(DEFAULT_SCRIPT.faults)
    assert len({p.seed for p in plans}) == len(plans)
    assert all(p.end is not None and p.start < p.end for p in plans)


def test_yaml_and_json_files_load(tmp_path: Path) -> None:
    """A YAML file and a JSON file with the same content give the same script."""
    data: dict[str, Any] = {
        "name": "small",
        "worker_restarts": [1],
        "faults": [
            {
                "provider": "resend",
                "endpoint": "POST /emails",
                "start": 0,
                "end": 2,
                "chaos": [{"p": 0.5, "kind": "rate_limited", "retry_after": 1}],
            }
        ],
    }
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps(data))
    as_yaml = tmp_path / "s.yaml"
    as_yaml.write_text(
        "name: small\nworker_restarts: [1]\nfaults:\n  - provider: resend\n"
        "    endpoint: POST /emails\n    start: 0\n    end: 2\n"
        "    chaos: [{p: 0.5, kind: rate_limited, retry_after: 1}]\n"
    )
    assert load_fault_script(as_json) == load_fault_script(as_yaml)
    assert load_fault_script(as_json).worker_restarts == (1.0,)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"faults": [{"provider": "myspace", "start": 0, "end": 1}]}, "provider"),
        ({"faults": [{"provider": "shopify", "start": 2, "end": 1}]}, "start < end"),
        ({"faults": [{"provider": "shopify", "start": "soon", "end": 1}]}, "seconds"),
        ({"faults": [{"provider": "shopify", "start": 0, "end": 1, "colour": 1}]}, "colour"),
        (
            {"faults": [{"provider": "shopify", "start": 0, "end": 1, "chaos": [{"p": 1}]}]},
            "fault kind",
        ),
        ({"faults": {"provider": "shopify"}}, "list"),
        ({"faults": [], "worker_restarts": [-1]}, "worker_restarts"),
        ({"fault": []}, "fault"),
        ([1, 2], "object"),
    ],
)
def test_a_wrong_script_is_a_configuration_error(data: Any, words: str) -> None:
    """Each mistake is reported with what is wrong, and where."""
    with pytest.raises(ConfigurationError) as caught:
        FaultScript.from_dict(data, source="test.yaml")
    assert words in caught.value.message


def test_a_missing_script_file_is_a_configuration_error(tmp_path: Path) -> None:
    """Loading a file that does not exist says so."""
    with pytest.raises(ConfigurationError, match="no fault script"):
        load_fault_script(tmp_path / "nope.yaml")


def test_customers_are_distinct_and_follow_the_seed() -> None:
    """Names, emails and phones are distinct; the same seed gives the same answers; arrivals
    spread over the window."""
    first = make_customers(30, seed=4, arrivals=10.0, think=(0.1, 0.2))
    second = make_customers(30, seed=4, arrivals=10.0, think=(0.1, 0.2))
    assert len({c.email for c in first}) == 30
    assert len({c.phone for c in first}) == 30
    assert len({c.first for c in first}) == 30
    assert [c.messages for c in first] == [c.messages for c in second]
    assert first[0].arrival == 0.0
    assert first[-1].arrival == 10.0
    assert all(0.1 <= t <= 0.2 for c in first for t in c.thinks)
    with pytest.raises(ConfigurationError):
        make_customers(0, seed=1, arrivals=1.0, think=(0.1, 0.2))


def test_a_long_script_runs_to_its_end_plus_the_drain_cap() -> None:
    """A script whose last window ends after the pace's ``max_seconds`` moves the run's
    deadline to its end plus the drain cap; a short one keeps ``max_seconds``."""
    from antifragile.demo import QUICK_PACE, DemoConfig
    from antifragile.demo._run import DemoRun

    long = FaultScript.from_dict(
        {"faults": [{"provider": "shopify", "start": 10, "end": 90, "chaos": []}]}
    )
    run = DemoRun(DemoConfig(customers=2, seed=1, script=long, pace=QUICK_PACE))
    assert run.deadline == 90 + QUICK_PACE.drain_cap
    short = DemoRun(DemoConfig(customers=2, seed=1, script=long.scaled(0.01), pace=QUICK_PACE))
    assert short.deadline == QUICK_PACE.max_seconds


def test_status_webhook_faults_are_accepted_for_whatsapp_only() -> None:
    """``endpoint: webhooks`` scripts the WhatsApp status webhooks; Shopify sends none, so a
    window there is a configuration error naming the endpoint."""
    from antifragile.demo._run import check_endpoints

    check_endpoints(DEFAULT_SCRIPT)
    wrong = FaultScript.from_dict(
        {
            "faults": [
                {
                    "provider": "shopify",
                    "endpoint": "webhooks",
                    "start": 0,
                    "end": 1,
                    "chaos": [{"p": 1.0, "kind": "error", "status": 503}],
                }
            ]
        }
    )
    with pytest.raises(ConfigurationError, match="webhooks"):
        check_endpoints(wrong)


def test_a_script_may_fault_mandrill_and_names_the_providers_when_wrong() -> None:
    """Mailchimp Transactional (``mandrill``), the email chain's second provider, can be
    faulted like the others, on its own endpoints; an unknown provider is named in the error
    with the list of those a script may name."""
    from antifragile.demo._run import check_endpoints

    script = FaultScript.from_dict(
        {
            "faults": [
                {
                    "provider": "mandrill",
                    "endpoint": "POST /messages/send",
                    "start": 0,
                    "end": 5,
                    "chaos": [{"p": 1.0, "kind": "error", "status": 500}],
                }
            ]
        }
    )
    check_endpoints(script)
    assert set(script.document(seed=1)) == {"mandrill"}
    wrong = FaultScript.from_dict(
        {"faults": [{"provider": "mandrill", "endpoint": "POST /emails", "start": 0, "end": 1}]}
    )
    with pytest.raises(ConfigurationError, match="POST /messages/send"):
        check_endpoints(wrong)
    with pytest.raises(ConfigurationError) as caught:
        FaultScript.from_dict({"faults": [{"provider": "mailgun", "start": 0, "end": 1}]})
    assert "unknown provider 'mailgun'" in caught.value.message
    assert "mandrill" in caught.value.message
