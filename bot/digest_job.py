"""The daily digest job: STEPUP_DIGEST_TIME in STEPUP_TIMEZONE, every day, on every replica.

Every replica schedules it; ``post`` records the day in the database in the transaction that
queues the message, so only one replica's digest goes out. The wall time is kept across DST
changes because the cron trigger runs in the configured zone, not in UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler

from bot.clock import utc_now

logger = logging.getLogger(__name__)

JOB_ID = "daily-digest"
CATCH_UP_JOB_ID = "daily-digest-catch-up"


def _run(post: Callable[[], bool]) -> None:
    try:
        posted = post()
    except Exception:  # the job must survive a bad day; tomorrow's run tries again
        logger.exception("daily digest failed")
        return
    if posted:
        logger.info("daily digest queued")
    else:
        logger.info("daily digest already posted today (another replica or an earlier run)")


def schedule_digest(
    scheduler: BackgroundScheduler,
    *,
    post: Callable[[], bool],
    digest_time: time,
    timezone: str,
    catch_up: bool = True,
    now: datetime | None = None,
) -> Any:
    """Add the daily job (id ``daily-digest``); returns it.

    With ``catch_up`` and ``now`` already past today's digest time, ``post`` also runs once at
    start-up: a process that was down at the digest time still sends the day's digest, and
    one that was not finds the day recorded and sends nothing.
    """
    zone = ZoneInfo(timezone)
    job = scheduler.add_job(
        _run,
        "cron",
        args=[post],
        hour=digest_time.hour,
        minute=digest_time.minute,
        second=digest_time.second,
        timezone=zone,
        id=JOB_ID,
        replace_existing=True,
        misfire_grace_time=None,  # a late run still posts: the day's row keeps it to one
        coalesce=True,
        max_instances=1,
    )
    local = (now or utc_now()).astimezone(zone)
    if catch_up and local.time() >= digest_time:
        scheduler.add_job(
            _run,
            "date",
            args=[post],
            id=CATCH_UP_JOB_ID,
            replace_existing=True,
            misfire_grace_time=None,
        )
    return job
