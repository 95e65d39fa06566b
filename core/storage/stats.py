"""What the database holds right now, for the metrics endpoint: a few aggregate reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.model import Status
from core.storage.outbox_repo import backlog, dead_letters
from core.storage.tables import AuditHeadRow, RequestRow, RevocationRow


@dataclass(frozen=True)
class CurrentFigures:
    requests_by_status: dict[Status, int]  # every status, zero included
    outbox_pending: int  # Slack messages owed
    outbox_oldest_age_seconds: float  # 0 when nothing is owed
    outbox_dead: int  # Slack messages given up on (refused, or failing past the cap)
    callbacks_pending: int  # signed callbacks owed (docs/callbacks.md)
    callbacks_oldest_age_seconds: float  # 0 when none is owed
    callbacks_dead: int  # signed callbacks given up on (failing past the cap)
    revocations_pending: int  # issuer-side revocations not yet done
    revocations_failing: int  # of which at least one attempt failed
    audit_entries: int  # the head's seq


def current_figures(session: Session, now: datetime) -> CurrentFigures:
    counts = dict(
        session.execute(select(RequestRow.status, func.count()).group_by(RequestRow.status)).all()
    )
    owed, oldest = backlog(session, callbacks=False)
    calls_owed, calls_oldest = backlog(session, callbacks=True)
    pending, failing = session.execute(
        select(func.count(), func.count().filter(RevocationRow.attempts > 0)).where(
            RevocationRow.status == "pending"
        )
    ).one()
    head = session.execute(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1)).scalar_one()
    return CurrentFigures(
        requests_by_status={status: int(counts.get(status.value, 0)) for status in Status},
        outbox_pending=owed,
        outbox_oldest_age_seconds=_age(now, oldest),
        outbox_dead=dead_letters(session, callbacks=False),
        callbacks_pending=calls_owed,
        callbacks_oldest_age_seconds=_age(now, calls_oldest),
        callbacks_dead=dead_letters(session, callbacks=True),
        revocations_pending=int(pending),
        revocations_failing=int(failing),
        audit_entries=int(head),
    )


def _age(now: datetime, oldest: datetime | None) -> float:
    return max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
