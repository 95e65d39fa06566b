"""Issuer-side revocations in SQL: lease due ones, mark them done, record a failure."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.storage.tables import RevocationRow
from core.store import LeasedRevocation


def lease(
    session: Session,
    now: datetime,
    *,
    limit: int,
    until: datetime,
    jtis: Sequence[str] | None = None,
) -> list[LeasedRevocation]:
    query = select(RevocationRow).where(
        RevocationRow.status == "pending", RevocationRow.next_attempt_at <= now
    )
    if jtis is not None:
        query = query.where(RevocationRow.jti.in_(list(jtis)))
    rows = list(
        session.execute(
            query.order_by(RevocationRow.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for row in rows:  # leased: another worker or replica leaves them alone
        row.next_attempt_at = until
        row.attempts += 1
    return [
        LeasedRevocation(r.jti, r.request_id, r.attempts, r.issuer, r.handle, r.issuer_config)
        for r in rows
    ]


def queue(
    session: Session,
    request_id: str,
    issuer: str,
    handle: str,
    issuer_config: str,
    now: datetime,
) -> str:
    """An unrecorded credential's revocation, under an id of its own (no credential row)."""
    jti = "unclaimed_" + secrets.token_urlsafe(12)
    session.add(
        RevocationRow(
            jti=jti,
            request_id=request_id,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            issuer=issuer,
            handle=handle,
            issuer_config=issuer_config,
        )
    )
    session.flush()
    return jti


def done(session: Session, jtis: Sequence[str], now: datetime) -> dict[str, datetime | None]:
    """Mark successful issuer calls done in one statement; returns each newly done jti with
    the time its alert was raised (None when none was)."""
    if not jtis:
        return {}
    return dict(
        session.execute(
            update(RevocationRow)
            .where(RevocationRow.jti.in_(list(jtis)), RevocationRow.status != "done")
            .values(status="done", done_at=now, last_error=None)
            .returning(RevocationRow.jti, RevocationRow.alerted_at)
            .execution_options(synchronize_session=False)
        ).all()
    )


def failed(
    session: Session, jti: str, *, error: str, retry_at: datetime, alert: bool, now: datetime
) -> bool | None:
    row = session.get(RevocationRow, jti)
    if row is None or row.status == "done":
        return None
    row.next_attempt_at = retry_at
    row.last_error = error[:2000]
    if alert and row.alerted_at is None:
        row.alerted_at = now
        return True
    return False
