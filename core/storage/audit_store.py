"""The audit chain in SQL: append under the head lock, stream entries in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from core.audit.chain import AuditEntry, entry_hash
from core.audit.events import AuditKind
from core.canonical import canonical_json
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow

_HEAD_KEY = "stepup.audit_head"  # in ``session.info``: [seq, hash] while a transaction appends


class SqlAuditAppender:
    """Appends in the session's transaction, so an entry commits or rolls back with its change.

    The head row is locked and read once per transaction (FOR UPDATE on PostgreSQL; SQLite's
    write transaction already holds the single write lock), entries are inserted as they come,
    and the head is written once, just before commit. Every appender of one session shares
    that state, so entries of one transaction chain to each other.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def _head(self) -> list[Any]:
        state: list[Any] | None = self._session.info.get(_HEAD_KEY)
        if state is None:
            row = self._session.execute(
                select(AuditHeadRow.seq, AuditHeadRow.hash)
                .where(AuditHeadRow.id == 1)
                .with_for_update()
            ).one()
            state = [row.seq, row.hash]
            self._session.info[_HEAD_KEY] = state
            event.listen(self._session, "before_commit", _write_head, once=True)
            event.listen(self._session, "after_rollback", _forget_head, once=True)
        return state

    def append(
        self,
        kind: AuditKind,
        *,
        at: datetime,
        request_id: str | None,
        actor: str | None,
        data: dict[str, Any],
    ) -> AuditEntry:
        head = self._head()
        seq, prev_hash = head[0] + 1, head[1]
        text = canonical_json(data)
        digest = entry_hash(
            seq=seq,
            at=at,
            kind=kind.value,
            request_id=request_id,
            actor=actor,
            data=text,
            prev_hash=prev_hash,
        )
        self._session.execute(
            insert(AuditRow).values(
                seq=seq,
                at=at,
                kind=kind.value,
                request_id=request_id,
                actor=actor,
                data=text,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        head[0], head[1] = seq, digest
        return AuditEntry(seq, at, kind.value, request_id, actor, text, prev_hash, digest)


def _write_head(session: Session) -> None:
    state = session.info.pop(_HEAD_KEY, None)
    if state is not None:
        session.execute(
            update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=state[0], hash=state[1])
        )


def _forget_head(session: Session) -> None:
    session.info.pop(_HEAD_KEY, None)


@contextmanager
def chain_snapshot(db: Database) -> Iterator[Session]:
    """A read transaction in which the head and the entries come from one snapshot.

    Verifying reads the head, then the entries. PostgreSQL's default READ COMMITTED takes a
    new snapshot per statement, so an entry the service appends in between would look like one
    added behind stepup's back. REPEATABLE READ keeps one snapshot for the whole transaction,
    as SQLite's read transactions (WAL) already do.
    """
    with db.engine.connect() as conn:
        if not db.is_sqlite:
            conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn, expire_on_commit=False) as session, session.begin():
            yield session


def read_head(session: Session) -> tuple[int, str]:
    head = session.execute(select(AuditHeadRow).where(AuditHeadRow.id == 1)).scalar_one()
    return head.seq, head.hash


def iter_entries(
    session: Session, *, since: datetime | None = None, batch: int = 5000
) -> Iterator[AuditEntry]:
    """Entries in seq order, fetched in batches so memory stays flat for long chains."""
    table = AuditRow.__table__
    query = select(
        table.c.seq,
        table.c.at,
        table.c.kind,
        table.c.request_id,
        table.c.actor,
        table.c.data,
        table.c.prev_hash,
        table.c.hash,
    ).order_by(table.c.seq)
    if since is not None:
        query = query.where(table.c.at >= since)
    # Columns are selected in AuditEntry's field order; positional unpacking of the row is
    # several times cheaper than attribute access, which shows on long chains.
    for row in session.execute(query.execution_options(yield_per=batch)):
        yield AuditEntry(*row)
