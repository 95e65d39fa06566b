"""APScheduler 3 in the service: a precise job per deadline plus a periodic reconcile sweep.

The database is the source of truth. Jobs only *nudge* the engine, which re-reads the request
and applies a compare-and-set, so a job that runs twice, late, or on two replicas at once
changes nothing the second time. A sweep at start-up catches what fell due while down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from core.model import Status
from core.records import RequestSnapshot
from core.service import Stepup

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class DeadlineScheduler:
    def __init__(
        self,
        service: Stepup,
        *,
        sweep_interval_seconds: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.service = service
        self.clock = clock
        self.sweep_interval_seconds = sweep_interval_seconds
        self.scheduler = BackgroundScheduler(timezone=UTC)

    def start(self) -> None:
        self.sweep()  # everything that fell due while the service was down
        self.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self.sweep_interval_seconds,
            id="reconcile-sweep",
            max_instances=1,
            coalesce=True,
        )
        self.service.subscribe(self.on_change)
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def sweep(self) -> int:
        try:
            done = self.service.expire_due(now=self.clock())
        except Exception:
            logger.exception("reconcile sweep failed; the next sweep retries")
            return 0
        if done:
            logger.info("sweep expired %d request(s)", len(done))
        return len(done)

    def on_change(self, snapshot: RequestSnapshot) -> None:
        """Service listener: schedule the request's next deadline exactly."""
        deadline = None
        if snapshot.status in (Status.PENDING, Status.APPROVED):
            deadline = snapshot.expires_at
        elif snapshot.status is Status.ACTIVE and snapshot.credential is not None:
            deadline = snapshot.credential.expires_at
        job_id = f"deadline:{snapshot.id}"
        if deadline is None:
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
            return
        # misfire_grace_time=None: a late date job still runs (APScheduler would drop it).
        self.scheduler.add_job(
            self._expire,
            "date",
            run_date=deadline,
            args=[snapshot.id],
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _expire(self, request_id: str) -> None:
        try:
            self.service.expire_one(request_id, now=self.clock())
        except Exception:
            logger.exception("deadline job for %s failed; the sweep will retry", request_id)
