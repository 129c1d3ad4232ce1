"""The application ``test_process_logs.py`` runs with ``antifragile worker --app
tests.acceptance._logging_app:jobs``: one job that calls a URL with httpx, its request line
carrying a customer's email in its query string. The payload holds a reference to the customer
(payloads never hold the email itself); the job looks the email up by it, as a real handler
would in its own records. The database comes from ``--database-url``."""

from __future__ import annotations

import httpx

from antifragile.jobs import JobContext, Jobs

jobs = Jobs()

#: the customers this application knows, by reference
CUSTOMERS = {"customer-1": "ada.lovelace@example.com"}


@jobs.job(name="lookup")
async def lookup(ctx: JobContext, url: str, customer: str) -> int:
    """GET *url* with the customer's email as ``?email=``; its status."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url, params={"email": CUSTOMERS[customer]})
    return response.status_code
