"""The typed options of the facades name exactly the keyword options of what they build, so
``jobs.worker(**options)`` and the assistant's decorators accept every option and no other."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from antifragile.jobs import Jobs, Scheduler, SchedulerOptions, Worker, WorkerOptions
from antifragile.service import _assistant


def _keywords(target: Callable[..., Any], *skip: str) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip
    }


@pytest.mark.parametrize(
    ("options", "target", "skip"),
    [
        (WorkerOptions, Worker, ()),
        (SchedulerOptions, Scheduler, ()),
        (_assistant._JobOptions, Jobs.job, ()),
        (_assistant._ScheduleOptions, Jobs.every, ()),
    ],
    ids=["worker", "scheduler", "job", "every"],
)
def test_typed_options_match_the_keyword_options(
    options: type[Any], target: Callable[..., Any], skip: tuple[str, ...]
) -> None:
    """Each TypedDict of options lists the keyword-only parameters of the class or method it is
    passed on to, all optional."""
    assert set(options.__annotations__) == _keywords(target, *skip)
    assert options.__required_keys__ == frozenset()


def test_a_worker_made_from_typed_options_has_them() -> None:
    """``jobs.worker(**options)`` builds a worker with the options given."""
    options: WorkerOptions = {"concurrency": 3, "queues": ["email"], "name": "w-1"}
    worker = Jobs(database_url="memory://").worker(**options)
    assert (worker.concurrency, worker.queues, worker.id) == (3, ["email"], "w-1")
