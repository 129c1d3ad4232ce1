"""The scheduler: cron ticks enqueued once each, catch-up policies, records across restarts.

Every test drives time with a FakeClock (whose wall clock starts at 1_700_001_000, a whole
minute) over a real SQLite queue in a temporary file.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.jobs import Cron, Fired, JobContext, JobFilter, Jobs, Schedule, Scheduler, Worker
from antifragile.jobs._cron import due_ticks
from antifragile.stores import open_store

START = 1_700_001_000  # FakeClock().time(): 22:30:00 UTC, on a whole minute


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def jobs(clock: FakeClock) -> AsyncIterator[Jobs]:
    """Jobs on the in-memory queue; tests of several processes share a SQLite file (``db``)."""
    async with Jobs(database_url="memory://", clock=clock) as opened:
        yield opened


async def noop(ctx: JobContext) -> None:
    return None


def declare(jobs: Jobs, cron: str = "* * * * *", **options: Any) -> Schedule:
    return jobs.every(cron, name="report", **options)(noop)


async def enqueued_ticks(jobs: Jobs, name: str = "report") -> list[int]:
    """The ticks of the jobs in the queue, checking that each carries its tick's key."""
    found = await jobs.find(JobFilter(name=name), limit=1000)
    ticks = sorted(job.payload["tick"] for job in found)
    for job in found:
        assert job.idempotency_key == f"cron:{name}:{job.payload['tick']}"
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
    return ticks


# -- declaration ------------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["61 * * * *", "not a cron", "", "* * *", "* * * * mon-funday"])
def test_an_invalid_cron_expression_is_refused_at_declaration(cron: str) -> None:
    """A malformed expression is a ConfigurationError where ``@jobs.every`` is written, not a
    scheduler crash later; nothing is declared."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match="cron expression"):
        jobs.every(cron)
    assert jobs.registry == {}


def test_a_bad_time_zone_or_policy_is_refused_at_declaration() -> None:
    """Unknown time zones, catch-up policies and bounds are refused at declaration too."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match="time zone"):
        jobs.every("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="catch_up"):
        jobs.every("* * * * *", catch_up="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_catch_up"):
        jobs.every("* * * * *", catch_up="all", max_catch_up=0)
    with pytest.raises(ConfigurationError, match="async def"):
        jobs.every("* * * * *")(lambda ctx: None)  # type: ignore[arg-type, return-value]


def test_every_declares_a_job_under_the_schedule_name() -> None:
    """``@jobs.every`` returns the Schedule and declares its job (name, queue, retry) so that
    workers run it like any job; calling the schedule calls the function."""
    jobs = Jobs(database_url="sqlite:///unused.db")

    @jobs.every("*/5 * * * *", queue="maintenance", timezone="Europe/Paris")
    async def nudge_inactive(ctx: JobContext) -> str:
        return "nudged"

    assert isinstance(nudge_inactive, Schedule)
    assert nudge_inactive.name == "nudge_inactive"
    assert nudge_inactive.expression == "*/5 * * * *"
    assert nudge_inactive.timezone == "Europe/Paris"
    assert jobs.registry["nudge_inactive"] is nudge_inactive.function
    assert nudge_inactive.function.queue == "maintenance"
    assert nudge_inactive.key(START) == f"cron:nudge_inactive:{START}"
    with pytest.raises(ConfigurationError, match="already declared"):
        jobs.every("* * * * *", name="nudge_inactive")(noop)


# -- ticks ------------------------------------------------------------------------------------


async def test_each_tick_is_enqueued_once_with_its_own_key(jobs: Jobs, clock: FakeClock) -> None:
    """Every tick of a minutely schedule becomes exactly one job keyed ``cron:<name>:<tick>``;
    passes between ticks, and repeated passes at the same instant, enqueue nothing more."""
    declare(jobs)
    scheduler = Scheduler(jobs)
    fired = await scheduler.run_once()
    assert [(f.tick, f.created) for f in fired] == [(START, True)]
    for _ in range(3):
        clock.advance(20)
        await scheduler.run_once()
        await scheduler.run_once()
    clock.advance(5)  # 22:31:05
    await scheduler.run_once()
    assert await enqueued_ticks(jobs) == [START, START + 60]


async def test_a_seconds_field_ticks_every_few_seconds(jobs: Jobs, clock: FakeClock) -> None:
    """A sixth field counts seconds: ``*/15`` fires at :00, :15, :30 and :45 of each minute."""
    declare(jobs, "* * * * * */15")
    scheduler = Scheduler(jobs)
    for _ in range(12):  # one minute, a pass every 5 s
        await scheduler.run_once()
        clock.advance(5)
    assert await enqueued_ticks(jobs) == [START, START + 15, START + 30, START + 45]


async def test_two_schedulers_enqueue_each_tick_once(db: str, clock: FakeClock) -> None:
    """Two schedulers (two Jobs over one database, as two processes would be) pass at the
    same instants. Each keeps its tick records apart -- the worst case, where neither sees
    that the other fired a tick -- and still, for each tick exactly one insert creates the
    job and the other finds it there: the idempotency key alone does it, with no lock and no
    leader."""
    own_a, own_b = (
        await open_store("memory://", clock=clock),
        await open_store("memory://", clock=clock),
    )
    async with Jobs(database_url=db, clock=clock) as a, Jobs(database_url=db, clock=clock) as b:
        declare(a)
        declare(b)
        first, second = Scheduler(a, store=own_a.kv), Scheduler(b, store=own_b.kv)
        results: list[Fired] = []
        for _ in range(5):
            results += await first.run_once()
            results += await second.run_once()
            clock.advance(60)
        created = sorted(f.tick for f in results if f.created)
        assert created == [START + 60 * i for i in range(5)]
        assert len(results) == 10  # both saw every tick
        assert await enqueued_ticks(a) == created


async def test_the_job_runs_with_its_tick(jobs: Jobs, clock: FakeClock) -> None:
    """A worker runs the periodic function with the tick in the payload and the tick's key as
    the context's idempotency key (what a job hands to providers)."""
    seen: list[tuple[Any, str]] = []

    @jobs.every("* * * * *")
    async def report(ctx: JobContext) -> None:
        seen.append((ctx.job.payload["tick"], ctx.idempotency_key))

    await Scheduler(jobs).run_once()
    assert await Worker(jobs).run_until_idle() == 1
    assert seen == [(START, f"cron:report:{START}")]


async def test_a_new_schedule_does_not_replay_its_past(jobs: Jobs, clock: FakeClock) -> None:
    """Declaring an hourly schedule at half past fires nothing until the next hour: a
    schedule seen for the first time starts just before now, whatever its policy."""
    declare(jobs, "0 * * * *", catch_up="all")
    scheduler = Scheduler(jobs)
    assert await scheduler.run_once() == []
    clock.advance(29 * 60)
    assert await scheduler.run_once() == []
    clock.advance(60 + 1)  # 23:00:01
    assert [f.tick for f in await scheduler.run_once()] == [START + 1800]


# -- catch-up ---------------------------------------------------------------------------------


async def outage(jobs: Jobs, clock: FakeClock, seconds: float, **options: Any) -> list[int]:
    """Fire the first tick, stop for *seconds*, pass once; the ticks that pass enqueued."""
    declare(jobs, **options)
    scheduler = Scheduler(jobs)  # grace: 10 s
    await scheduler.run_once()
    clock.advance(seconds)
    return [f.tick for f in await scheduler.run_once()]


async def test_catch_up_latest_fires_only_the_most_recent_missed_tick(
    jobs: Jobs, clock: FakeClock
) -> None:
    """``latest`` (the default): after ten missed minutely ticks the job runs once, for the
    most recent of them."""
    fired = await outage(jobs, clock, 10 * 60 + 30)
    assert fired == [START + 600]
    assert await enqueued_ticks(jobs) == [START, START + 600]


async def test_catch_up_latest_prefers_an_on_time_tick(jobs: Jobs, clock: FakeClock) -> None:
    """``latest``: when the scheduler comes back right at a tick, that on-time tick is the
    most recent one and the only one fired."""
    fired = await outage(jobs, clock, 10 * 60 + 3)
    assert fired == [START + 600]


async def test_catch_up_all_fires_every_missed_tick_oldest_first(
    jobs: Jobs, clock: FakeClock
) -> None:
    """``all``: every tick missed during the outage fires, oldest first."""
    fired = await outage(jobs, clock, 10 * 60 + 30, catch_up="all")
    assert fired == [START + 60 * i for i in range(1, 11)]


async def test_catch_up_all_is_bounded(jobs: Jobs, clock: FakeClock) -> None:
    """``all`` fires at most ``max_catch_up`` missed ticks -- the most recent ones -- so a
    day-long outage does not flood the queue."""
    fired = await outage(jobs, clock, 24 * 3600 + 30, catch_up="all", max_catch_up=3)
    assert fired == [START + 24 * 3600 - 120, START + 24 * 3600 - 60, START + 24 * 3600]


async def test_catch_up_none_skips_missed_ticks(jobs: Jobs, clock: FakeClock) -> None:
    """``none``: missed ticks are dropped; the job runs again at its next tick."""
    fired = await outage(jobs, clock, 10 * 60 + 30, catch_up="none")
    assert fired == []
    clock.advance(30)
    assert [f.tick for f in await Scheduler(jobs).run_once()] == [START + 660]
    assert await enqueued_ticks(jobs) == [START, START + 660]


async def test_catch_up_works_across_restarts(db: str, clock: FakeClock) -> None:
    """The last tick is recorded in the database: a scheduler started later, in a new process
    (new Jobs, new Scheduler), fires exactly the ticks missed since -- not the ones already
    fired, and not only the on-time ones a fresh start would fire."""
    async with Jobs(database_url=db, clock=clock) as before:
        declare(before, catch_up="all")
        await Scheduler(before).run_once()
        clock.advance(120)
        await Scheduler(before).run_once()
    clock.advance(5 * 60 + 30)  # down for five and a half minutes
    async with Jobs(database_url=db, clock=clock) as after:
        declare(after, catch_up="all")
        fired = await Scheduler(after).run_once()
        assert [f.tick for f in fired] == [START + 60 * i for i in range(3, 8)]
        assert all(f.created for f in fired)
        assert await enqueued_ticks(after) == [START, START + 60, START + 120] + [
            START + 60 * i for i in range(3, 8)
        ]


# -- the loop ---------------------------------------------------------------------------------


async def test_run_wakes_at_each_tick_until_stopped(jobs: Jobs, clock: FakeClock) -> None:
    """``run`` sleeps on the clock until the next tick and fires it; ``stop`` ends the loop.
    With a FakeClock the ten seconds pass at once."""
    declare(jobs, "* * * * * *")
    fired: list[int] = []

    def stop_after_ten(f: Fired) -> None:
        fired.append(f.tick)
        if len(fired) == 10:
            scheduler.stop()

    scheduler = Scheduler(jobs, on_fired=stop_after_ten)
    await scheduler.run()
    assert fired == [START + i for i in range(10)]
    assert all(s <= 1.0 + 0.01 for s in clock.sleeps)


def test_scheduler_options_are_validated(jobs: Jobs) -> None:
    """A non-positive tick interval or negative grace is refused."""
    with pytest.raises(ConfigurationError):
        Scheduler(jobs, tick_interval=0)
    with pytest.raises(ConfigurationError):
        Scheduler(jobs, grace=-1)
    assert Scheduler(jobs).grace == 10.0
    assert Scheduler(jobs, tick_interval=30).grace == 90.0


# -- cron maths (pure) ------------------------------------------------------------------------


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_utc_ticks_have_no_daylight_saving_shift() -> None:
    """In UTC (the default) a daily 02:30 tick is exactly 24 h after the previous one across
    the night Europe moves its clocks; the same schedule in Europe/Berlin has a 23-hour day."""
    utc = Cron("30 2 * * *")
    t = _utc("2024-03-29T12:00:00")
    ticks = []
    for _ in range(4):
        t = utc.next_after(t)
        ticks.append(t)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [86_400] * 3
    assert ticks[0] == _utc("2024-03-30T02:30:00")
    berlin = Cron("0 12 * * *", timezone="Europe/Berlin")
    noon_30 = berlin.next_after(_utc("2024-03-30T00:00:00"))
    noon_31 = berlin.next_after(noon_30)
    assert noon_31 - noon_30 == 23 * 3600


def test_due_ticks_on_time_boundary() -> None:
    """A tick exactly ``grace`` seconds old is on time; one second older is missed."""
    cron = Cron("* * * * *")
    on_time = due_ticks(cron, after=START - 1, now=START + 10, grace=10, catch_up="none")
    assert on_time.fire == (START,)
    missed = due_ticks(cron, after=START - 1, now=START + 11, grace=10, catch_up="none")
    assert missed.fire == ()
    assert missed.skipped == 1
    assert missed.last_tick == START


def test_due_ticks_walks_a_long_outage_cheaply() -> None:
    """A year of missed per-second ticks under ``latest`` is decided without visiting them
    all (the count of skipped ticks stops at 1000)."""
    cron = Cron("* * * * * *")
    due = due_ticks(cron, after=START - 365 * 86_400, now=START, grace=0, catch_up="latest")
    assert due.fire == (START,)
    assert due.last_tick == START
    due = due_ticks(cron, after=START - 365 * 86_400, now=START + 0.5, grace=0, catch_up="latest")
    assert due.fire == (START,)
    assert due.skipped == 1000
