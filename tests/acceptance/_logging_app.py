"""The application ``test_process_logs.py`` runs with ``antifragile worker --app
tests.acceptance._logging_app:jobs``: one job that calls a URL with httpx (whose request line
carries a customer's email in its query string). The database comes from ``--database-url``."""

from __future__ import annotations

import httpx

from antifragile.jobs import JobContext, Jobs

jobs = Jobs()


@jobs.job(name="lookup")
async def lookup(ctx: JobContext, url: str) -> int:
    """GET *url*; its status."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    return response.status_code
