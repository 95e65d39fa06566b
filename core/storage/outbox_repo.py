"""Claiming and settling outbox entries. Safe with several workers and replicas.

An entry is ``pending`` until it is ``sent``, or ``dead``: given up on (Slack refused it, or
it kept failing), kept with its error, never retried, and no longer holding back its
request's later entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from core.notices import NoticeKind
from core.storage.database import Database
from core.storage.tables import OutboxRow


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    request_id: str | None
    kind: str
    payload: str
    attempts: int


def claim_due(
    session: Session,
    now: datetime,
    *,
    limit: int = 50,
    lease: timedelta = timedelta(seconds=60),
    kinds: Sequence[str] | None = None,
) -> list[OutboxEntry]:
    """Take up to ``limit`` due entries, each the oldest pending one of its request (a dead
    entry no longer blocks the ones after it). With ``kinds``, only entries of those kinds,
    ordered among themselves (Slack messages and callbacks do not hold each other back).

    Taking an entry pushes its next attempt past the lease, so another worker (or replica)
    leaves it alone while it is being delivered; a worker that dies simply lets it fall due.
    """
    earlier = aliased(OutboxRow)
    same_family = [] if kinds is None else [earlier.kind.in_(kinds)]
    blocked = exists().where(
        and_(
            earlier.request_id == OutboxRow.request_id,
            earlier.status == "pending",
            earlier.id < OutboxRow.id,
            *same_family,
        )
    )
    of_kinds = [] if kinds is None else [OutboxRow.kind.in_(kinds)]
    rows = list(
        session.execute(
            select(OutboxRow)
            .where(
                OutboxRow.status == "pending",
                OutboxRow.next_attempt_at <= now,
                ~blocked,
                *of_kinds,
            )
            .order_by(OutboxRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for row in rows:
        row.next_attempt_at = now + lease
        row.attempts += 1
    session.flush()
    return [OutboxEntry(r.id, r.request_id, r.kind, r.payload, r.attempts) for r in rows]


def mark_sent(session: Session, entry_id: int, now: datetime) -> None:
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == entry_id)
        .values(status="sent", sent_at=now, last_error=None)
    )


def reschedule(session: Session, entry_id: int, *, at: datetime, error: str) -> None:
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == entry_id)
        .values(next_attempt_at=at, last_error=error[:2000])
    )


def mark_dead(session: Session, entry_id: int, *, error: str, at: datetime | None = None) -> None:
    """Give up on the entry. With ``at`` (when it was given up on), a dead entry's
    ``next_attempt_at``, which no attempt will ever use again, records that time: the digest
    counts the callbacks given up on in its window (``given_up``)."""
    values: dict[str, Any] = {"status": "dead", "last_error": error[:2000]}
    if at is not None:
        values["next_attempt_at"] = at
    session.execute(update(OutboxRow).where(OutboxRow.id == entry_id).values(**values))


def release(session: Session, entry_id: int, *, at: datetime) -> None:
    """Hand a claimed entry back unattempted (its attempt is not counted), due at ``at``."""
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == entry_id, OutboxRow.status == "pending")
        .values(next_attempt_at=at, attempts=OutboxRow.attempts - 1)
    )


def given_up(
    session: Session, *, callbacks: bool, start: datetime, end: datetime, recent: int
) -> tuple[int, tuple[str, ...]]:
    """How many entries (callbacks, or Slack messages) were given up on in ``[start, end)``,
    and the request ids of the ``recent`` latest (by when they were given up on)."""
    in_window = (
        OutboxRow.status == "dead",
        OutboxRow.next_attempt_at >= start,
        OutboxRow.next_attempt_at < end,
        *_of_family(callbacks),
    )
    count = session.execute(
        select(func.count()).select_from(OutboxRow).where(*in_window)
    ).scalar_one()
    latest = session.execute(
        select(OutboxRow.request_id)
        .where(*in_window, OutboxRow.request_id.is_not(None))
        .order_by(OutboxRow.next_attempt_at.desc(), OutboxRow.id.desc())
        .limit(recent)
    ).scalars()
    return int(count), tuple(str(r) for r in latest)


def _of_family(callbacks: bool | None) -> list[Any]:
    """Callbacks (``True``), Slack messages (``False``) or every entry (``None``)."""
    if callbacks is None:
        return []
    is_callback = OutboxRow.kind == NoticeKind.CALLBACK.value
    return [is_callback if callbacks else ~is_callback]


def dead_letters(session: Session, *, callbacks: bool | None = None) -> int:
    """How many messages were given up on (for metrics): callbacks only (``callbacks=True``),
    Slack messages only (``False``), or all."""
    count = session.execute(
        select(func.count())
        .select_from(OutboxRow)
        .where(OutboxRow.status == "dead", *_of_family(callbacks))
    ).scalar_one()
    return int(count)


def pending_for(session: Session, request_id: str) -> list[OutboxRow]:
    return list(
        session.execute(
            select(OutboxRow)
            .where(OutboxRow.request_id == request_id, OutboxRow.status == "pending")
            .order_by(OutboxRow.id)
        ).scalars()
    )


def deliveries(session: Session, request_id: str) -> list[dict[str, object]]:
    """Every message owed for a request and how its delivery went (for `requests show`)."""
    rows = session.execute(
        select(OutboxRow).where(OutboxRow.request_id == request_id).order_by(OutboxRow.id)
    ).scalars()
    return [
        {
            "kind": r.kind,
            "status": r.status,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "created_at": r.created_at.isoformat(),
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
        }
        for r in rows
    ]


def backlog(session: Session, *, callbacks: bool | None = None) -> tuple[int, datetime | None]:
    """How many messages are owed, and since when (for metrics): callbacks only
    (``callbacks=True``), Slack messages only (``False``), or all."""
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxRow.created_at)).where(
            OutboxRow.status == "pending", *_of_family(callbacks)
        )
    ).one()
    return int(count), oldest


def request_deliveries(db: Database, request_id: str) -> list[dict[str, object]]:
    """``deliveries`` in a read of its own."""
    with db.read() as session:
        return deliveries(session, request_id)


@dataclass(frozen=True, slots=True)
class DeliveryState:
    status: str  # "pending", "sent" or "dead"
    last_error: str | None


def unaddressed_delivery(db: Database, *, kind: str, created_at: datetime) -> DeliveryState:
    """How the message of ``kind`` queued at ``created_at`` for no request (the digest) fares."""
    with db.read() as session:
        row = session.execute(
            select(OutboxRow).where(
                OutboxRow.kind == kind,
                OutboxRow.request_id.is_(None),
                OutboxRow.created_at == created_at,
            )
        ).scalar_one()
        return DeliveryState(row.status, row.last_error)
