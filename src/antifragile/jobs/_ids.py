"""The short form of a job id, and finding a job from the part of its id an operator typed.

A job id is 12 hex digits of milliseconds then 20 hex digits (random, counted up within a
millisecond), so jobs made within the same minutes share their first digits: the short form is
the *last* :data:`SHORT_ID_LENGTH` digits (40 bits), the form the CLI tables, the admin API
(``short_id``) and the dashboard show.
An operator may name a job by its full id, by its short form, or by any prefix or ending of at
least :data:`MIN_ID_PART` hex digits, as with git commits.
"""

from __future__ import annotations

import re

from antifragile.errors import ErrorCode
from antifragile.jobs._function import JobNotFoundError
from antifragile.jobs._model import Job, JobFilter
from antifragile.jobs._protocol import JobQueue

#: digits of the short id (the random tail of the id)
SHORT_ID_LENGTH = 10
#: the fewest hex digits of an id a lookup accepts
MIN_ID_PART = 4
#: candidates named when a part matches several jobs
CANDIDATES_SHOWN = 8

_HEX = re.compile(r"[0-9a-f]+")


def short_id(job_id: str) -> str:
    """The short form of *job_id*: its last :data:`SHORT_ID_LENGTH` characters."""
    return job_id[-SHORT_ID_LENGTH:]


async def find_job(queue: JobQueue, text: str) -> Job:
    """The job *text* names: its full id, or a prefix or ending of it (the short id).

    Raises :class:`JobNotFoundError` with code ``NOT_FOUND`` when no job matches,
    ``BAD_REQUEST`` when *text* is not a possible id, and ``CONFLICT`` (listing the candidates)
    when it matches several jobs.
    """
    wanted = text.strip()
    job = await queue.get(wanted) if wanted else None
    if job is not None:
        return job
    part = wanted.lower()
    if len(part) < MIN_ID_PART or _HEX.fullmatch(part) is None:
        raise JobNotFoundError(
            f"{text!r} is not a job id: give the id, its short form (last {SHORT_ID_LENGTH} "
            f"characters) or at least {MIN_ID_PART} of its first or last hex digits",
            code=ErrorCode.BAD_REQUEST,
        )
    found = await queue.find(JobFilter(id_part=part), limit=CANDIDATES_SHOWN + 1)
    if not found:
        raise JobNotFoundError(f"no job id starts or ends with {part!r}")
    if len(found) > 1:
        shown = ", ".join(
            f"{job.id} ({job.name}, {job.state.value})" for job in found[:CANDIDATES_SHOWN]
        )
        more = " and more" if len(found) > CANDIDATES_SHOWN else ""
        raise JobNotFoundError(
            f"{part!r} matches several jobs: {shown}{more}; give more digits",
            code=ErrorCode.CONFLICT,
        )
    return found[0]
