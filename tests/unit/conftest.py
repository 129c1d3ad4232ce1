"""Fixtures shared by the unit tests: a fake clock and a recording observer."""

from __future__ import annotations

import pytest

from antifragile import FakeClock
from antifragile.observability import RecordingObserver


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when a test (or a policy's sleep) moves it."""
    return FakeClock()


@pytest.fixture
def recorder() -> RecordingObserver:
    """An observer that keeps every event, in order."""
    return RecordingObserver()
