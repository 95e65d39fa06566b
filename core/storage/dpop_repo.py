"""DPoP proofs already seen (RFC 9449 replay protection): one row per proof until it is stale."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict
from core.storage.tables import DpopProofRow

_PROOFS = cast(Table, DpopProofRow.__table__)


def spend(session: Session, key: str, *, until: datetime, now: datetime) -> None:
    """Record the proof; Conflict if it is recorded already. Rows past their time go first (an
    indexed range delete of the few proofs that went stale since the last claim), so a table
    holds at most the proofs of the last few minutes."""
    connection = session.connection()
    connection.execute(delete(_PROOFS).where(_PROOFS.c.expires_at < now))
    try:  # a concurrent replay waits for the first insert to commit, then fails here
        connection.execute(insert(_PROOFS).values(jti=key, expires_at=until))
    except IntegrityError:
        raise Conflict("this DPoP proof was already used") from None
