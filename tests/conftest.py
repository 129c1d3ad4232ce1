"""Shared fixtures: real PostgreSQL and Redis when they are there.

In CI (``CI=true``) a missing service fails the run; elsewhere its tests skip with the reason.
Addresses come from ``ANTIFRAGILE_TEST_POSTGRES_URL`` / ``ANTIFRAGILE_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ANTIFRAGILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (or, in CI, fail) the calling test when the service at *url* is not reachable."""
    if _reachable(url):
        return
    message = f"{name} is not reachable at {url} (set ANTIFRAGILE_TEST_{name.upper()}_URL)"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("postgres", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("redis", REDIS_URL)
    return REDIS_URL
