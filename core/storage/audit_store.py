"""The audit chain in SQL: append under the head lock, stream entries in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, event, select
from sqlalchemy.orm import Session, SessionTransaction

from core.audit.chain import AuditEntry, entry_hash
from core.audit.checkpoints import (
    CHECKPOINT_ACTOR,
    Checkpoint,
    CheckpointSchedule,
    checkpoint_data,
    parse_checkpoint_entry,
    sign_checkpoint,
    verify_checkpoint,
)
from core.audit.events import AuditKind
from core.canonical import canonical_json
from core.errors import InvalidToken
from core.keys import KeyRing
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow

_PENDING_KEY = "stepup.audit"  # in ``session.info``: entries appended, not yet written
# In a write session's ``info`` (from ``Database.write_session_info``): the CheckpointSchedule.
_CHECKPOINTS_KEY = "stepup.audit.checkpoints"
_CHECKPOINT_KIND = AuditKind.AUDIT_CHECKPOINT.value

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
ENTRY_COLUMNS = (  # in AuditEntry's field order
    _AUDIT.c.seq,
    _AUDIT.c.at,
    _AUDIT.c.kind,
    _AUDIT.c.request_id,
    _AUDIT.c.actor,
    _AUDIT.c.data,
    _AUDIT.c.prev_hash,
    _AUDIT.c.hash,
)


class SqlAuditAppender:
    """Appends in the session's transaction, so an entry commits or rolls back with its change.

    ``append`` only queues the entry (its data already in canonical JSON). Just before the
    transaction commits, the queued entries of the session are chained: the head row is
    locked and read (FOR UPDATE on PostgreSQL; SQLite's write transaction already holds the
    single write lock), each entry gets the next seq and its hash, all are inserted in one
    statement and the head is advanced. So the head, which every writer of the chain waits
    for, is held only for those three statements and the commit, not for the whole
    transaction. Every appender of one session shares the queue, so the entries of a
    transaction are consecutive and in the order appended; a rollback drops them with
    everything else. Nothing reads the log inside the transaction that appends to it.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def append(
        self,
        kind: AuditKind,
        *,
        at: datetime,
        request_id: str | None,
        actor: str | None,
        data: dict[str, Any],
    ) -> None:
        pending: list[dict[str, Any]] | None = self._session.info.get(_PENDING_KEY)
        if pending is None:
            pending = self._session.info[_PENDING_KEY] = []
        pending.append(
            {
                "at": at,
                "kind": kind.value,
                "request_id": request_id,
                "actor": actor,
                "data": canonical_json(data),
            }
        )


def _write_pending(session: Session) -> None:
    """Before every commit: chain the queued entries onto the head, write them in one
    statement and advance the head (nothing to do when nothing was queued). When the session
    has a checkpoint schedule and these entries cross a multiple of its N, a signed
    checkpoint of the last one follows them, in the same statement."""
    rows: list[dict[str, Any]] | None = session.info.pop(_PENDING_KEY, None)
    if not rows:
        return
    connection = session.connection()
    seq, prev_hash = connection.execute(_LOCK_HEAD).one()
    start = seq
    for row in rows:
        seq += 1
        digest = entry_hash(seq=seq, prev_hash=prev_hash, **row)
        row.update(seq=seq, prev_hash=prev_hash, hash=digest)
        prev_hash = digest
    schedule: CheckpointSchedule | None = session.info.get(_CHECKPOINTS_KEY)
    if schedule is not None and schedule.due(start, seq):
        checkpoint = sign_checkpoint(schedule.keyring, seq=seq, hash=prev_hash, at=rows[-1]["at"])
        rows.append(_checkpoint_row(checkpoint))
        seq, prev_hash = seq + 1, rows[-1]["hash"]
    connection.execute(_INSERT_ENTRIES, rows)
    connection.execute(_WRITE_HEAD, {"new_seq": seq, "new_hash": prev_hash})


def _checkpoint_row(checkpoint: Checkpoint) -> dict[str, Any]:
    """The entry that records ``checkpoint``, right after the entry it signs."""
    row: dict[str, Any] = {
        "at": checkpoint.at,
        "kind": _CHECKPOINT_KIND,
        "request_id": None,
        "actor": CHECKPOINT_ACTOR,
        "data": canonical_json(checkpoint_data(checkpoint)),
    }
    seq = checkpoint.seq + 1
    row.update(
        seq=seq,
        prev_hash=checkpoint.hash,
        hash=entry_hash(seq=seq, prev_hash=checkpoint.hash, **row),
    )
    return row


def _forget(session: Session, transaction: SessionTransaction) -> None:
    """However the outermost transaction ended (committed: already written; rolled back,
    closed, failed in its commit), nothing queued in it outlives it, even when the session
    goes on to a next transaction."""
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


# On the Session class, so every session (whichever factory made it) writes its entries.
event.listen(Session, "before_commit", _write_pending)
event.listen(Session, "after_transaction_end", _forget)


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


def log_length(db: Database) -> int:
    """How many entries the head records."""
    with db.read() as session:
        return read_head(session)[0]


def iter_entries(
    session: Session, *, since: datetime | None = None, batch: int = 5000
) -> Iterator[AuditEntry]:
    """Entries in seq order, fetched in batches so memory stays flat for long chains."""
    query = select(*ENTRY_COLUMNS).order_by(_AUDIT.c.seq)
    if since is not None:
        query = query.where(_AUDIT.c.at >= since)
    # Columns are selected in AuditEntry's field order; positional unpacking of the row is
    # several times cheaper than attribute access, which shows on long chains.
    for row in session.execute(query.execution_options(yield_per=batch)):
        yield AuditEntry(*row)


def read_entries(db: Database, *, since: datetime | None = None) -> Iterator[AuditEntry]:
    """The stored entries in seq order, from ``since`` on; the read lasts while they are read."""
    with db.read() as session:
        yield from iter_entries(session, since=since)


# -- checkpoints ------------------------------------------------------------------------------


def sign_checkpoints(db: Database, schedule: CheckpointSchedule) -> None:
    """From now on, every write session of ``db`` appends a signed checkpoint each time the
    chain passes a multiple of ``schedule.every`` entries."""
    db.write_session_info[_CHECKPOINTS_KEY] = schedule


def checkpoint_head(db: Database, keyring: KeyRing, *, now: datetime) -> Checkpoint | None:
    """A signed checkpoint of the head, appended unless the head already is one: the
    checkpoint now last in the log (None while the log is empty).

    Under the head lock, so replicas that run this at once append one checkpoint, not one
    each; a log with nothing new since its last checkpoint gets none.
    """
    with db.write() as session:
        connection = session.connection()
        seq, head_hash = connection.execute(_LOCK_HEAD).one()
        if seq == 0:
            return None
        last = connection.execute(select(*ENTRY_COLUMNS).where(_AUDIT.c.seq == seq)).one_or_none()
        if last is not None and last.kind == _CHECKPOINT_KIND:
            try:
                return verify_checkpoint(parse_checkpoint_entry(AuditEntry(*last)).signed, keyring)
            except (InvalidToken, ValueError, KeyError):
                pass  # not a checkpoint this service can vouch for: sign a fresh one
        checkpoint = sign_checkpoint(keyring, seq=seq, hash=head_hash, at=now)
        row = _checkpoint_row(checkpoint)
        connection.execute(_INSERT_ENTRIES, [row])
        connection.execute(_WRITE_HEAD, {"new_seq": row["seq"], "new_hash": row["hash"]})
        return checkpoint


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """The last checkpoint entry's checkpoint, as recorded (verifying is the chain's job).

    A backward scan of the primary key that stops at the first checkpoint: with one every N
    entries, it reads at most about N rows."""
    row = session.execute(
        select(*ENTRY_COLUMNS)
        .where(_AUDIT.c.kind == _CHECKPOINT_KIND)
        .order_by(_AUDIT.c.seq.desc())
        .limit(1)
    ).one_or_none()
    return parse_checkpoint_entry(AuditEntry(*row)) if row is not None else None
