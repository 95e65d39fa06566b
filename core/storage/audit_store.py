"""The audit chain in SQL: append under the head lock, stream entries in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, event, select
from sqlalchemy.orm import Session

from core.audit.chain import AuditEntry, entry_hash
from core.audit.events import AuditKind
from core.canonical import canonical_json
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow

_STATE_KEY = "stepup.audit"  # in ``session.info`` while a transaction appends: _Pending

_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)
# Prebuilt Core statements: the ORM's bulk-insert path costs several times more per entry.
_INSERT_ENTRIES = _AUDIT.insert()
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_WRITE_HEAD = (
    _HEAD.update()
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


class _Pending:
    """The head as this transaction sees it, and the entries it has chained but not written."""

    __slots__ = ("hash", "rows", "seq")

    def __init__(self, seq: int, head_hash: str) -> None:
        self.seq = seq
        self.hash = head_hash
        self.rows: list[dict[str, Any]] = []


class SqlAuditAppender:
    """Appends in the session's transaction, so an entry commits or rolls back with its change.

    The head row is locked and read once per transaction (FOR UPDATE on PostgreSQL; SQLite's
    write transaction already holds the single write lock). Entries are chained in memory as
    they come and written in one statement, with the new head, just before the transaction
    commits: nothing reads the log inside the transaction that appends to it. Every appender
    of one session shares that state, so entries of one transaction chain to each other; a
    rollback discards them with everything else.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def _pending(self) -> _Pending:
        state: _Pending | None = self._session.info.get(_STATE_KEY)
        if state is None:
            seq, head_hash = self._session.connection().execute(_LOCK_HEAD).one()
            state = _Pending(seq, head_hash)
            self._session.info[_STATE_KEY] = state
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
        state = self._pending()
        seq, prev_hash = state.seq + 1, state.hash
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
        state.rows.append(
            {
                "seq": seq,
                "at": at,
                "kind": kind.value,
                "request_id": request_id,
                "actor": actor,
                "data": text,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        state.seq, state.hash = seq, digest
        return AuditEntry(seq, at, kind.value, request_id, actor, text, prev_hash, digest)


def write_pending(session: Session) -> None:
    """Write the entries chained so far and advance the head (a no-op when there are none)."""
    state: _Pending | None = session.info.get(_STATE_KEY)
    if state is None or not state.rows:
        return
    rows, state.rows = state.rows, []
    connection = session.connection()
    connection.execute(_INSERT_ENTRIES, rows)
    connection.execute(_WRITE_HEAD, {"new_seq": state.seq, "new_hash": state.hash})


def _before_commit(session: Session) -> None:
    write_pending(session)
    session.info.pop(_STATE_KEY, None)


def _forget(session: Session) -> None:
    session.info.pop(_STATE_KEY, None)


# On the Session class, so every session (whichever factory made it) writes its entries.
event.listen(Session, "before_commit", _before_commit)
event.listen(Session, "after_rollback", _forget)


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
