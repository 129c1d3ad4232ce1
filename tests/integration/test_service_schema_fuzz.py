"""Schemathesis over the service's own ``/openapi.json``, against the real app on a real server.

The app is ``create_app(settings)`` with the real :class:`~antifragile.service.Assistant` opened
by the lifespan (a SQLite file, every webhook secret, an admin bootstrap key), served by uvicorn.
Every documented operation is called with generated requests -- valid and invalid -- once
without credentials and once with the admin API key, so the admin handlers are reached past
authentication. What it proves: no generated request gets a 5xx, and every answer is one the
schema documents (the envelope for JSON), and the server logs no error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from antifragile.service import Settings, create_app
from tests._service_standin import running_server

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
CHECKS: list[Any] = [not_a_server_error, response_schema_conformance]

#: generated cases per operation with the admin key (enough to reach the handlers' edges) and
#: without credentials (mostly refused at once): the module runs in well under a minute on two
#: busy cores
EXAMPLES = 10
EXAMPLES_WITHOUT_CREDENTIALS = 5


def fuzz_settings(database: Path) -> Settings:
    return Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{database}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": "wa-fuzz-secret",
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "wa-fuzz-verify-token",
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": "twilio-fuzz-token",
            # Twilio and HubSpot sign the URL they call: the hosts it may name
            "ANTIFRAGILE_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver,test",
            "ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET": "shopify-fuzz-secret",
            "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
            # one client address sends everything here: its limit would only answer 429s
            "ANTIFRAGILE_INBOUND_IP_RATE": "off",
            "ANTIFRAGILE_INBOUND_SENDER_RATE": "off",
        }
    )


class LogErrors(logging.Handler):
    """Collects every ERROR record of the server (the app's and uvicorn's loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server_errors() -> Iterator[LogErrors]:
    errors = LogErrors()
    loggers = [logging.getLogger(name) for name in ("", "antifragile", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        yield errors
    finally:
        for logger in loggers:
            logger.removeHandler(errors)


@pytest.fixture(scope="module")
def service_url(
    tmp_path_factory: pytest.TempPathFactory, server_errors: LogErrors
) -> Iterator[str]:
    database = tmp_path_factory.mktemp("schema-fuzz") / "service.db"
    app = create_app(fuzz_settings(database))
    with running_server(app) as url:
        assert app.state.assistant is not None  # the lifespan opened the real assistant
        yield url


@pytest.fixture(autouse=True)
def no_server_errors(server_errors: LogErrors) -> Iterator[None]:
    """Each test ends with nothing logged as an error by the server (no unhandled exception)."""
    server_errors.records.clear()
    yield
    assert [f"{r.name}: {r.getMessage()}" for r in server_errors.records] == []


@pytest.fixture(scope="module")
def api_schema(service_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{service_url}/openapi.json")


def _operations() -> list[tuple[str, str]]:
    """Every documented (method, path), read from the app's schema (no server needed)."""
    document = create_app(fuzz_settings(Path("unused.db"))).openapi()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    ]


OPERATIONS = _operations()


def fuzz(
    api_schema: Any, method: str, path: str, headers: dict[str, str], *, examples: int
) -> None:
    """Call *method* *path* with generated valid and invalid requests, checking each answer."""
    operation = api_schema[path][method]
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in modes])
    with requests.Session() as session:

        @given(case=cases)
        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=10)

        call()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_without_credentials(
    api_schema: Any, method: str, path: str
) -> None:
    """Generated requests without credentials: never a 5xx, always a documented answer."""
    fuzz(api_schema, method, path, {}, examples=EXAMPLES_WITHOUT_CREDENTIALS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_with_the_admin_key(
    api_schema: Any, method: str, path: str
) -> None:
    """Generated requests with the admin API key (handlers reached past auth): never a 5xx,
    always a documented answer."""
    fuzz(api_schema, method, path, {"Authorization": f"Bearer {ADMIN_KEY}"}, examples=EXAMPLES)
