"""APScheduler 3 in the service: a precise job per deadline plus a periodic reconcile sweep.

The database is the source of truth. Jobs only *nudge* the engine, which re-reads the request
and applies a compare-and-set, so a job that runs twice, late, or on two replicas at once
changes nothing the second time. A sweep at start-up catches what fell due while down.
"""

from __future__ import annotations

import logging
import threading
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
        self._revoking = threading.Lock()

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
        """Expire, escalate and retry issuer revocations: everything due by the database."""
        done = 0
        for name, step in (
            ("expiry", lambda now: len(self.service.expire_due(now=now))),
            ("escalation", lambda now: len(self.service.escalate_due(now=now))),
            ("revocation", self._revocations_at),
        ):
            try:
                done += step(self.clock())
            except Exception:
                logger.exception("%s sweep failed; the next sweep retries", name)
        return done

    def _revocations_at(self, now: datetime) -> int:
        # One pass at a time in this process; other replicas are kept apart by row leases.
        with self._revoking:
            return self.service.process_revocations(now=now)

    def _revocations(self) -> None:
        try:
            self._revocations_at(self.clock())
        except Exception:
            logger.exception("issuer revocations failed; the sweep retries")

    def on_change(self, snapshot: RequestSnapshot) -> None:
        """Service listener: schedule the request's next deadlines exactly."""
        deadline = None
        if snapshot.status in (Status.PENDING, Status.APPROVED):
            deadline = snapshot.expires_at
        elif snapshot.status is Status.ACTIVE and snapshot.credential is not None:
            deadline = snapshot.credential.expires_at
        self._at(f"deadline:{snapshot.id}", deadline, self._expire, snapshot.id)
        escalation = snapshot.next_escalation_at if snapshot.status is Status.PENDING else None
        self._at(f"escalate:{snapshot.id}", escalation, self._escalate, snapshot.id)
        if snapshot.credential is not None and snapshot.credential.revoked_at is not None:
            self._at("revocations-now", self.clock(), self._revocations)

    def _at(
        self, job_id: str, when: datetime | None, func: Callable[..., None], *args: str
    ) -> None:
        if when is None:
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
            return
        # misfire_grace_time=None: a late date job still runs (APScheduler would drop it).
        self.scheduler.add_job(
            func,
            "date",
            run_date=when,
            args=list(args),
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _expire(self, request_id: str) -> None:
        try:
            self.service.expire_one(request_id, now=self.clock())
        except Exception:
            logger.exception("deadline job for %s failed; the sweep will retry", request_id)

    def _escalate(self, request_id: str) -> None:
        try:
            self.service.escalate_one(request_id, now=self.clock())
        except Exception:
            logger.exception("escalation job for %s failed; the sweep will retry", request_id)
