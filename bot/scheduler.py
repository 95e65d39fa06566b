"""APScheduler 3 in the service: a precise job per deadline plus a periodic reconcile sweep.

The database is the source of truth. Jobs only *nudge* the engine, which re-reads the request
and applies a compare-and-set, so a job that runs twice, late, or on two replicas at once
changes nothing the second time. A sweep at start-up catches what fell due while down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from bot.clock import utc_now
from core.model import Status
from core.service import Stepup
from core.snapshots import RequestSnapshot
from core.storage.audit_chainer import BackgroundChainer

logger = logging.getLogger(__name__)

NEXT_DEADLINE_JOB = "next-deadline"
CHECKPOINT_JOB = "audit-checkpoint"


class Drain:
    """Runs ``work`` until nobody asks for more: one pass at a time, and no caller waits.

    A caller that finds a pass running leaves its request in a flag and returns; the running
    pass sees the flag and goes round once more. So a request made at any moment is served by
    a pass that starts after it, and a burst of callers (every precise job of one second, on a
    thread each) costs one or two passes, not one transaction each competing for the lock.
    """

    def __init__(self, work: Callable[[], int]) -> None:
        self._work = work
        self._wanted = threading.Event()
        self._running = threading.Lock()

    def __call__(self) -> int:
        self._wanted.set()
        done = 0
        while self._wanted.is_set():  # re-checked after release: a request made meanwhile
            if not self._running.acquire(blocking=False):
                return done  # the running pass will serve it
            try:
                while self._wanted.is_set():
                    self._wanted.clear()
                    done += self._work()
            finally:
                self._running.release()
        return done


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
        self._arm_lock = threading.Lock()
        self._armed: datetime | None = None
        # One pass of each at a time in this process; other replicas are kept apart by row
        # locks (expiry) and row leases (issuer revocations).
        self._expiry = Drain(lambda: len(self.service.expire_due(now=self.clock())))
        self._revocations_pass = Drain(lambda: self.service.process_revocations(now=self.clock()))
        # PostgreSQL: audit entries are written unchained; the leading replica's chainer
        # chains them (SQLite chains them in their own transaction).
        self.chainer = None if service.db.is_sqlite else BackgroundChainer(service.db)

    def start(self) -> None:
        if self.chainer is not None:
            self.chainer.start()
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
        upcoming = self.service.next_deadline()
        if upcoming is not None:
            self._arm(upcoming)
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.chainer is not None:
            self.chainer.stop()

    def sweep(self) -> int:
        """Expire, escalate and retry issuer revocations: everything due by the database."""
        steps: list[tuple[str, Callable[[], int]]] = [
            ("expiry", self._expiry),
            ("escalation", lambda: len(self.service.escalate_due(now=self.clock()))),
            ("revocation", self._revocations_pass),
            ("orphan credential", lambda: self.service.sweep_orphans(now=self.clock())),
        ]
        done = 0
        for name, step in steps:
            try:
                done += step()
            except Exception:
                logger.exception("%s sweep failed; the next sweep retries", name)
        return done

    def _revocations(self) -> None:
        try:
            self._revocations_pass()
        except Exception:
            logger.exception("issuer revocations failed; the sweep retries")

    def on_change(self, snapshot: RequestSnapshot) -> None:
        """Service listener: make sure the timer fires by this request's next deadline."""
        deadlines = []
        if snapshot.status in (Status.PENDING, Status.APPROVED) and snapshot.expires_at:
            deadlines.append(snapshot.expires_at)
        elif snapshot.status is Status.ACTIVE and snapshot.credential is not None:
            deadlines.append(snapshot.credential.expires_at)
        if snapshot.status is Status.PENDING and snapshot.next_escalation_at is not None:
            deadlines.append(snapshot.next_escalation_at)
        if deadlines:
            self._arm(min(deadlines))
        if (
            snapshot.credential is not None
            and snapshot.credential.revoked_at is not None
            and snapshot.terms.issuer is None  # an issuer's: revoked right after the commit
            and not self.service.builtin_revocations_settled  # or settled in the commit
        ):
            # Several instances may run at once: all but one return at once (see Drain).
            self._at("revocations-now", self.clock(), self._revocations, instances=16)

    def _arm(self, when: datetime) -> None:
        """One timer for the earliest deadline, whatever the number of live requests.

        A change only ever moves it earlier; when it fires, one pass handles everything due
        and the timer is set again from the database's next deadline (an indexed MIN).
        """
        with self._arm_lock:
            if self._armed is not None and self._armed <= when and self._armed > self.clock():
                return
            self._armed = when
            self._at(NEXT_DEADLINE_JOB, when, self._deadline_reached, instances=16)

    def _deadline_reached(self) -> None:
        with self._arm_lock:
            self._armed = None
        try:
            self._expiry()
            self.service.escalate_due(now=self.clock())
        except Exception:
            logger.exception("deadline pass failed; the sweep will retry")
        try:
            upcoming = self.service.next_deadline()
        except Exception:
            logger.exception("could not read the next deadline; the sweep will retry")
            return
        if upcoming is not None:
            # Something still due (a failed pass) is retried shortly, not in a tight loop.
            self._arm(max(upcoming, self.clock() + timedelta(milliseconds=200)))

    def _at(
        self,
        job_id: str,
        when: datetime | None,
        func: Callable[..., None],
        *args: str,
        instances: int = 1,
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
            max_instances=instances,
        )


def schedule_checkpoints(
    scheduler: BackgroundScheduler, checkpoint: Callable[[], object], *, minutes: int
) -> None:
    """Every ``minutes``, ``checkpoint``: a signed checkpoint of the audit head, appended only
    when entries came since the last one. Every replica runs it; the head lock makes replicas
    that run at once append one checkpoint, so the job is idempotent."""

    def run() -> None:
        try:
            checkpoint()
        except Exception:  # the next run tries again; entries stay unanchored meanwhile
            logger.exception("audit checkpoint failed; the next run retries")

    scheduler.add_job(
        run,
        "interval",
        minutes=minutes,
        id=CHECKPOINT_JOB,
        replace_existing=True,
        max_instances=1,
        coalesce=True,
    )
