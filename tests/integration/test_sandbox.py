"""The provider sandbox over real HTTP: routing, every fault kind, the admin endpoints.

A plain httpx client talks to the sandbox's Resend simulator, so what is proved here is the
sandbox itself -- which faults leave a side effect and which do not -- not a connector.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile import ConfigurationError
from antifragile.sandbox import (
    Fault,
    FaultPlan,
    FlakyServer,
    IncomingRequest,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
)
from tests._waiting import wait_until

AUTH = {"authorization": "Bearer re_test_key"}
EMAIL = {"from": "Shop <shop@example.com>", "to": "owner@example.com", "subject": "Hi", "text": "x"}
SEND = "POST /emails"


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([ResendSimulator(rate_limit=1000)]) as running:
        yield running


@pytest.fixture
def resend(sandbox: ProviderSandbox) -> Iterator[httpx.Client]:
    # requests meant to be answered wait generously; a test of a hang passes a short timeout
    with httpx.Client(base_url=sandbox.base_url("resend"), timeout=30.0) as client:
        yield client


def send(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post("/emails", json=EMAIL, headers={**AUTH, **headers})


def test_sandbox_serves_the_simulator_under_its_prefix(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """A request under ``/resend`` reaches the Resend simulator; unknown providers and paths
    get 404, a known path with another method 405; only the accepted email is an effect."""
    response = send(resend)
    assert response.status_code == 200
    assert sandbox.effects("resend")[0].id == response.json()["id"]
    assert httpx.get(f"{sandbox.url}/nobody/emails").status_code == 404
    assert resend.get("/emails").status_code == 405
    assert resend.post("/nothing", headers=AUTH).status_code == 404
    assert len(sandbox.effects("resend")) == 1
    assert sandbox.effects("resend")[0].data == EMAIL


def test_latency_delays_the_answer_but_not_the_effect(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """A latency fault answers normally, late; endpoint latency applies to every request."""
    sandbox.faults("resend", SEND, script=[ProviderFault.latency(0.2)])
    started = time.monotonic()
    assert send(resend).status_code == 200
    assert time.monotonic() - started >= 0.2
    sandbox.faults("resend", SEND, latency=0.1)
    started = time.monotonic()
    assert send(resend).status_code == 200
    assert time.monotonic() - started >= 0.1
    assert len(sandbox.effects("resend")) == 2


def test_error_fault_renders_the_providers_body_without_an_effect(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """A 5xx fault answers in Resend's ``{statusCode, name, message}`` format and sends
    nothing; the script is used once, then requests succeed."""
    sandbox.faults("resend", SEND, script=[ProviderFault.error(503), ProviderFault.error(500)])
    first, second, third = send(resend), send(resend), send(resend)
    assert first.status_code == 503
    assert first.json()["name"] == "service_unavailable"
    assert first.json()["statusCode"] == 503
    assert second.json() == {
        "statusCode": 500,
        "name": "application_error",
        "message": "An unexpected error occurred.",
    }
    assert third.status_code == 200
    assert len(sandbox.effects("resend")) == 1


def test_rate_limited_fault_has_retry_after_and_rate_limit_headers(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """A 429 fault carries ``retry-after`` and the ``ratelimit-*`` headers; nothing is sent."""
    sandbox.faults("resend", SEND, script=[ProviderFault.rate_limited(3)])
    response = send(resend)
    assert response.status_code == 429
    assert response.json()["name"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "3"
    assert response.headers["ratelimit-limit"] == "1000"
    assert sandbox.effects("resend") == []


def test_provider_quota_refuses_beyond_its_limit() -> None:
    """The simulator's own quota (Resend: 2 per second) answers 429 once it is used up, with
    ``ratelimit-remaining`` counting down."""
    with (
        ProviderSandbox([ResendSimulator(rate_limit=2, per=30)]) as sandbox,
        httpx.Client(base_url=sandbox.base_url("resend")) as client,
    ):
        answers = [send(client) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
        assert int(answers[2].headers["retry-after"]) >= 1
        assert len(sandbox.effects("resend")) == 2


def test_reset_and_hang_lose_the_request_before_it_is_handled(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """A reset drops the connection, a hang never answers (the client times out); neither
    handles the request, so there is no effect."""
    sandbox.faults("resend", SEND, script=[ProviderFault.reset(), ProviderFault.hang()])
    with pytest.raises(httpx.TransportError):
        send(resend)
    with pytest.raises(httpx.ReadTimeout):
        resend.post("/emails", json=EMAIL, headers=AUTH, timeout=0.2)
    assert sandbox.effects("resend") == []


def test_malformed_answer_does_not_parse(sandbox: ProviderSandbox, resend: httpx.Client) -> None:
    """A malformed fault answers 200 with a JSON body that does not parse; nothing is sent."""
    sandbox.faults("resend", SEND, script=[ProviderFault.malformed()])
    response = send(resend)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert sandbox.effects("resend") == []


@pytest.mark.parametrize("lost", ["reset", "hang"])
def test_ambiguous_failure_commits_the_effect_then_loses_the_answer(
    sandbox: ProviderSandbox, resend: httpx.Client, lost: Any
) -> None:
    """The ambiguous failure: the email is sent (an effect is recorded), then the client
    gets a reset or no answer at all -- it cannot know the email went out."""
    sandbox.faults("resend", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    with pytest.raises(httpx.TransportError):
        resend.post("/emails", json=EMAIL, headers=AUTH, timeout=0.2)
    # a busy sandbox may record the effect after the client stopped waiting for its answer
    wait_until(lambda: len(sandbox.effects("resend")) == 1)
    assert len(sandbox.effects("resend")) == 1


def test_ambiguous_failure_then_same_idempotency_key_returns_the_first_email(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """After an ambiguous failure, a retry with the same ``Idempotency-Key`` gets the id of
    the email already sent, and no second effect."""
    sandbox.faults("resend", SEND, script=[ProviderFault.ambiguous()])
    with pytest.raises(httpx.TransportError):
        send(resend, **{"idempotency-key": "k-1"})
    retried = send(resend, **{"idempotency-key": "k-1"})
    assert retried.status_code == 200
    effects = sandbox.effects("resend")
    assert [e.id for e in effects] == [retried.json()["id"]]


def test_chaos_probabilities_are_reproducible_and_effects_match_successes(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """Chaos draws a fault per request with the given probabilities (seeded); every 200 is
    one effect, every 5xx none."""
    sandbox.faults("resend", SEND, chaos=[(0.5, ProviderFault.error(502))], seed=3)
    statuses = [send(resend).status_code for _ in range(60)]
    assert set(statuses) == {200, 502}
    assert 15 < statuses.count(502) < 45
    assert len(sandbox.effects("resend")) == statuses.count(200)
    again = FaultPlan(chaos=[(0.5, ProviderFault.error(502))], seed=3)
    assert [again.pick() is not None for _ in range(60)] == [s == 502 for s in statuses]


def test_wildcard_endpoint_applies_to_every_endpoint(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """Faults set for ``"*"`` hit every endpoint of the provider; an endpoint's own plan is
    asked first."""
    sandbox.faults("resend", "*", script=[ProviderFault.error(500)])
    sandbox.faults("resend", SEND, script=[ProviderFault.error(503)])
    assert [send(resend).status_code for _ in range(3)] == [503, 500, 200]


def test_faults_for_unknown_providers_or_endpoints_are_refused(sandbox: ProviderSandbox) -> None:
    """Setting faults for a provider or endpoint that does not exist is a configuration
    error, not a silent no-op."""
    with pytest.raises(ConfigurationError):
        sandbox.faults("nobody")
    with pytest.raises(ConfigurationError):
        sandbox.faults("resend", "GET /emails")
    with pytest.raises(ConfigurationError):
        ProviderFault.from_dict({"kind": "explode"})
    with pytest.raises(ConfigurationError):
        FaultPlan(chaos=[(0.7, ProviderFault.reset()), (0.7, ProviderFault.hang())])


def test_admin_endpoint_changes_faults_at_run_time(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """``PUT /_sandbox/faults`` sets plans while the sandbox runs, ``GET`` shows them,
    ``DELETE`` clears them; a bad document is 400 and changes nothing."""
    admin = f"{sandbox.url}/_sandbox/faults"
    document = {"resend": {SEND: {"script": [{"kind": "error", "status": 502}]}}}
    put = httpx.put(admin, json=document)
    assert put.status_code == 200
    assert put.json()["resend"][SEND]["script"] == [{"kind": "error", "status": 502}]
    assert send(resend).status_code == 502
    assert send(resend).status_code == 200
    bad = httpx.put(admin, json={"resend": {SEND: {"script": [{"kind": "nope"}]}}})
    assert bad.status_code == 400
    assert httpx.put(admin, json={"nobody": {}}).status_code == 400
    assert httpx.put(admin, json={"resend": {"GET /emails": {}}}).status_code == 400
    httpx.put(admin, json={"resend": {"*": {"chaos": [{"p": 1.0, "kind": "error"}]}}})
    assert send(resend).status_code == 503
    assert httpx.delete(admin).json() == {}
    assert send(resend).status_code == 200
    assert httpx.get(admin).json() == {}


def test_fault_file_sets_initial_faults(tmp_path: Path) -> None:
    """A JSON fault file loaded at start-up scripts the provider's failures."""
    file = tmp_path / "faults.json"
    file.write_text(
        json.dumps(
            {
                "resend": {
                    SEND: {
                        "script": [{"kind": "rate_limited", "retry_after": 2}],
                        "latency": 0.01,
                    }
                }
            }
        )
    )
    with (
        ProviderSandbox([ResendSimulator(rate_limit=100)], fault_file=file) as sandbox,
        httpx.Client(base_url=sandbox.base_url("resend")) as client,
    ):
        first = send(client)
        assert (first.status_code, first.headers["retry-after"]) == (429, "2")
        assert send(client).status_code == 200
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError):
        ProviderSandbox([ResendSimulator()], fault_file=bad)


def test_yaml_fault_file_when_pyyaml_is_installed(tmp_path: Path) -> None:
    """A ``.yaml`` fault file is read the same way when PyYAML is there."""
    pytest.importorskip("yaml")
    file = tmp_path / "faults.yaml"
    file.write_text("resend:\n  'POST /emails':\n    script:\n      - {kind: error, status: 500}\n")
    sandbox = ProviderSandbox([ResendSimulator()], fault_file=file)
    assert sandbox.engine.to_dict()["resend"][SEND]["script"] == [{"kind": "error", "status": 500}]


def test_effects_endpoint_lists_effects_by_provider(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """``GET /_sandbox/effects?provider=`` returns the count and the effects, so tests in
    another process can count them; ``POST /_sandbox/reset`` forgets them."""
    send(resend, **{"idempotency-key": "a"})
    send(resend, **{"idempotency-key": "a"})  # a replay: no new effect
    send(resend)
    body = httpx.get(f"{sandbox.url}/_sandbox/effects", params={"provider": "resend"}).json()
    assert body["count"] == 2
    assert body["effects"][0]["idempotency_key"] == "a"
    assert body["effects"][0]["data"] == EMAIL
    other = httpx.get(f"{sandbox.url}/_sandbox/effects", params={"provider": "shopify"}).json()
    assert other == {"count": 0, "effects": []}
    assert httpx.post(f"{sandbox.url}/_sandbox/reset").status_code == 200
    assert sandbox.effects() == []


def test_flaky_server_handler_hook_answers_or_falls_through() -> None:
    """A FlakyServer ``handler`` answers the requests it wants (any fault, resets included)
    and returns ``None`` for the others, which get the scripted/default answers."""

    def handler(request: IncomingRequest) -> Fault | None:
        if request.path == "/mine":
            return Fault.ok(201, json={"echo": request.json()})
        if request.path == "/drop":
            return Fault.reset()
        return None

    with FlakyServer(default=Fault.ok(json={"default": True}), handler=handler) as server:
        mine = httpx.post(f"{server.url}/mine", json={"a": 1})
        assert (mine.status_code, mine.json()) == (201, {"echo": {"a": 1}})
        assert httpx.get(f"{server.url}/other").json() == {"default": True}
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/drop")
        assert [r.fault for r in server.requests] == ["ok", "ok", "reset"]


def test_idempotency_keys_expire_after_their_ttl() -> None:
    """Resend keeps a key for 24 h: past the TTL the same key is new again (a new email, even
    with another body); within it, another body is 409."""
    now = [0.0]
    simulator = ResendSimulator(rate_limit=100, clock=lambda: now[0])
    with (
        ProviderSandbox([simulator]) as sandbox,
        httpx.Client(base_url=sandbox.base_url("resend")) as client,
    ):
        headers = {**AUTH, "idempotency-key": "k"}
        assert client.post("/emails", json=EMAIL, headers=headers).status_code == 200
        changed = {**EMAIL, "subject": "Other"}
        assert client.post("/emails", json=changed, headers=headers).status_code == 409
        now[0] += 24 * 3600
        assert client.post("/emails", json=changed, headers=headers).status_code == 200
        assert len(sandbox.effects("resend")) == 2
        too_long = {**AUTH, "idempotency-key": "k" * 257}
        refused = client.post("/emails", json=EMAIL, headers=too_long)
        assert (refused.status_code, refused.json()["name"]) == (400, "invalid_idempotency_key")


def test_a_failing_handler_answers_500() -> None:
    """A bug in a FlakyServer handler answers 500 and keeps the server serving."""

    def handler(request: IncomingRequest) -> Fault | None:
        raise RuntimeError("bug")

    with FlakyServer(handler=handler) as server:
        assert httpx.get(f"{server.url}/x").status_code == 500
        assert httpx.get(f"{server.url}/x").status_code == 500


def test_plans_with_windows_play_as_a_timeline(
    sandbox: ProviderSandbox, resend: httpx.Client
) -> None:
    """Plans with time windows on one endpoint play in turn: an outage for the first second,
    then normal service, then 429s from 2 s on; the document round-trips as a list. (Each
    request is sent a second before its window ends, so that a busy machine keeps it there.)"""
    outage = [(1.0, ProviderFault.error(503))]
    sandbox.faults("resend", SEND, chaos=outage, end=1.0)
    sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.rate_limited())], start=2.0, add=True)
    set_at = time.monotonic()  # the windows count from a moment before this one
    assert send(resend).status_code == 503
    wait_until(lambda: time.monotonic() - set_at >= 1.0, interval=0.01)
    assert send(resend).status_code == 200
    wait_until(lambda: time.monotonic() - set_at >= 2.0, interval=0.01)
    assert send(resend).status_code == 429
    document = sandbox.engine.to_dict()
    assert [plan.get("end") for plan in document["resend"][SEND]] == [1.0, None]
    sandbox.clear_faults()
    sandbox.load_faults(document)
    assert len(sandbox.engine.to_dict()["resend"][SEND]) == 2
