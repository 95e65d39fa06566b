"""The digest job fires at the configured wall time in its zone, across DST changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bot.digest_job import CATCH_UP_JOB_ID, JOB_ID, schedule_digest
from tests.support import eventually

PARIS = "Europe/Paris"


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    sched = BackgroundScheduler(timezone=UTC)
    yield sched
    if sched.running:
        sched.shutdown(wait=False)


def never() -> bool:
    raise AssertionError("not expected to run")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Winter (UTC+1): 09:00 in Paris is 08:00 UTC.
        (datetime(2026, 1, 15, 12, 0, tzinfo=UTC), datetime(2026, 1, 16, 8, 0, tzinfo=UTC)),
        # Saturday 28 March 2026 in winter time; Sunday's 09:00 is already summer time (UTC+2).
        (datetime(2026, 3, 28, 8, 30, tzinfo=UTC), datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        # Saturday 24 October in summer time; Sunday's 09:00 is back to winter time.
        (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
        # Just before today's run: today's, not tomorrow's.
        (datetime(2026, 10, 26, 7, 59, 59, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC)),
    ],
)
def test_fires_at_nine_paris_time(
    scheduler: BackgroundScheduler, now: datetime, expected: datetime
) -> None:
    job = schedule_digest(
        scheduler, post=never, digest_time=time(9, 0), timezone=PARIS, catch_up=False, now=now
    )
    fire = job.trigger.get_next_fire_time(None, now)
    assert fire == expected
    assert fire.astimezone(job.trigger.timezone).strftime("%H:%M:%S") == "09:00:00"


def test_job_settings(scheduler: BackgroundScheduler) -> None:
    scheduler.start(paused=True)  # jobs go to the job store at once (replace_existing applies)
    now = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    first = schedule_digest(
        scheduler, post=never, digest_time=time(9, 0), timezone=PARIS, catch_up=False, now=now
    )
    job = schedule_digest(
        scheduler, post=never, digest_time=time(17, 45, 30), timezone=PARIS, catch_up=False, now=now
    )
    assert first.id == job.id == JOB_ID
    assert [j.id for j in scheduler.get_jobs()] == [JOB_ID]  # replaced, not added twice
    assert job.misfire_grace_time is None and job.coalesce is True and job.max_instances == 1
    assert job.trigger.get_next_fire_time(None, now) == datetime(
        2026, 1, 15, 16, 45, 30, tzinfo=UTC
    )


def test_the_job_calls_post_and_survives_its_failure(scheduler: BackgroundScheduler) -> None:
    calls: list[str] = []

    def broken() -> bool:
        calls.append("broken")
        raise RuntimeError("database down")

    job = schedule_digest(
        scheduler, post=broken, digest_time=time(9), timezone=PARIS, catch_up=False
    )
    job.func(*job.args)  # does not raise: tomorrow's run tries again
    assert calls == ["broken"]


@pytest.mark.parametrize(
    ("now", "catches_up"),
    [
        (datetime(2026, 1, 15, 7, 59, tzinfo=UTC), False),  # 08:59 in Paris: the job will run
        (datetime(2026, 1, 15, 8, 0, tzinfo=UTC), True),  # 09:00 in Paris: today's is due
        (datetime(2026, 1, 15, 22, 30, tzinfo=UTC), True),  # 23:30 in Paris
        (datetime(2026, 1, 15, 23, 30, tzinfo=UTC), False),  # 00:30 on the 16th in Paris
    ],
)
def test_catch_up_only_once_todays_time_has_passed(
    scheduler: BackgroundScheduler, now: datetime, catches_up: bool
) -> None:
    schedule_digest(scheduler, post=never, digest_time=time(9, 0), timezone=PARIS, now=now)
    assert (scheduler.get_job(CATCH_UP_JOB_ID) is not None) is catches_up


def test_catch_up_runs_at_start(scheduler: BackgroundScheduler) -> None:
    posted = threading.Event()

    def post() -> bool:
        posted.set()
        return True

    schedule_digest(
        scheduler,
        post=post,
        digest_time=time(9, 0),
        timezone=PARIS,
        now=datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
    )
    scheduler.start()
    assert posted.wait(10)
    # A one-shot job: the scheduler drops it once run. Waiting for that also keeps the
    # teardown's shutdown from racing the scheduler thread's own removal of the job.
    eventually(
        lambda: scheduler.get_job(CATCH_UP_JOB_ID),
        until=lambda job: job is None,
        interval=0.01,
        message="the one-shot catch-up job was kept",
    )
