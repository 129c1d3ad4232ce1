"""The application that the scheduler processes of ``test_scheduler_processes.py`` load with
``antifragile scheduler --app tests.integration._scheduler_app:jobs``: one per-second schedule.
The database comes from ``--database-url``."""

from __future__ import annotations

from antifragile.jobs import JobContext, Jobs

jobs = Jobs()


@jobs.every("* * * * * *", catch_up="none")
async def every_second(ctx: JobContext) -> None:
    """Does nothing: the test counts the jobs enqueued, not their runs."""
