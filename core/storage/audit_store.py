"""The audit chain in SQL: entries appended with their change, chained in one total order.

SQLite chains a transaction's entries in the transaction itself, under the head row (SQLite
admits one writer anyway). PostgreSQL writes them unchained into ``audit_pending`` and a
single chainer (``core/storage/audit_chainer.py``) gives them their seq and hash moments
later, so writers no longer queue on the head row (docs/audit.md, "Pending entries").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, event, func, literal, select, text, union_all
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
from core.storage.tables import AuditHeadRow, AuditPendingRow, AuditRow

log = logging.getLogger(__name__)

_PENDING_KEY = "stepup.audit"  # in ``session.info``: entries appended, not yet written
_WROTE_PENDING_KEY = "stepup.audit.wrote_pending"  # in ``session.info``: chain after commit
# In a write session's ``info`` (``run_chainer_in_background``): who chains what this
# session wrote to ``audit_pending`` (else the committing thread chains it at once).
CHAINER_KEY = "stepup.audit.chainer"
# In a write session's ``info`` (from ``Database.write_session_info``): the CheckpointSchedule.
_CHECKPOINTS_KEY = "stepup.audit.checkpoints"
_CHECKPOINT_KIND = AuditKind.AUDIT_CHECKPOINT.value

_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)
AUDIT_PENDING = cast(Table, AuditPendingRow.__table__)
# Prebuilt Core statements: the ORM's bulk-insert path costs several times more per entry.
INSERT_ENTRIES = _AUDIT.insert()
_INSERT_PENDING = AUDIT_PENDING.insert()
# Held by every PostgreSQL writer from inserting its pending entries until it commits; the
# chainer takes it exclusively for an instant to learn the highest id that is settled (no
# transaction still in flight holds a lower one). An arbitrary, fixed advisory-lock key.
PENDING_FENCE = 0x5739_5551
_FENCE_SHARED = text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(key=PENDING_FENCE)
LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
WRITE_HEAD = (
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
    transaction commits, the queued entries of the session are written, in the order
    appended, after everything else the transaction changes (it is flushed first, so the
    entries are written once the transaction holds every row lock it takes):

    - SQLite: chained at once. The head row is read (SQLite's write transaction already
      holds the single write lock), each entry gets the next seq and its hash, all are
      inserted in one statement and the head is advanced.
    - PostgreSQL: inserted unchained into ``audit_pending`` (ids from one sequence), under a
      shared advisory lock held until the commit: no head row, so writers do not queue on
      each other. A chainer moves them into the chain in id order (``audit_chainer``): a
      background one when the process runs one (``stepup serve``), else the committing
      thread, right after the commit.

    A rollback drops the queued entries with everything else. Nothing reads the log inside
    the transaction that appends to it.
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
    """Before every commit: write the queued entries (nothing to do when none was queued)."""
    if not session.info.get(_PENDING_KEY):
        return
    session.flush()  # every row this transaction changes is written (and locked) first
    rows: list[dict[str, Any]] = session.info.pop(_PENDING_KEY)
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        connection.execute(_FENCE_SHARED)
        connection.execute(_INSERT_PENDING, rows)
        session.info[_WROTE_PENDING_KEY] = True
        return
    seq, prev_hash = connection.execute(LOCK_HEAD).one()
    rows = chain_rows(
        rows, seq=seq, prev_hash=prev_hash, schedule=session.info.get(_CHECKPOINTS_KEY)
    )
    connection.execute(INSERT_ENTRIES, rows)
    connection.execute(WRITE_HEAD, {"new_seq": rows[-1]["seq"], "new_hash": rows[-1]["hash"]})


def chain_rows(
    rows: list[dict[str, Any]],
    *,
    seq: int,
    prev_hash: str,
    schedule: CheckpointSchedule | None,
) -> list[dict[str, Any]]:
    """``rows`` (at, kind, request_id, actor, data) chained after the entry ``seq`` whose
    hash is ``prev_hash``: each gets the next seq, ``prev_hash`` and ``hash``. When they
    cross a multiple of the schedule's N, a signed checkpoint of the last one follows them."""
    start = seq
    for row in rows:
        seq += 1
        digest = entry_hash(seq=seq, prev_hash=prev_hash, **row)
        row.update(seq=seq, prev_hash=prev_hash, hash=digest)
        prev_hash = digest
    if schedule is not None and schedule.due(start, seq):
        checkpoint = sign_checkpoint(schedule.keyring, seq=seq, hash=prev_hash, at=rows[-1]["at"])
        rows.append(checkpoint_row(checkpoint))
    return rows


def checkpoint_row(checkpoint: Checkpoint) -> dict[str, Any]:
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


def _chain_committed(session: Session) -> None:
    """After a commit that wrote pending entries: wake the background chainer, or chain them
    now, outside the committed transaction. A failure leaves them pending for the next pass
    (the change itself is committed; this must not turn it into an error)."""
    if not session.info.pop(_WROTE_PENDING_KEY, False):
        return
    chainer = session.info.get(CHAINER_KEY)
    if chainer is not None:
        chainer.wake()
        return
    from core.storage.audit_chainer import chain_pending

    try:
        chain_pending(session.get_bind().engine, schedule=session.info.get(_CHECKPOINTS_KEY))
    except Exception:
        log.exception("chaining the audit entries just written failed; they stay pending")


def _forget(session: Session, transaction: SessionTransaction) -> None:
    """However the outermost transaction ended (committed: already written; rolled back,
    closed, failed in its commit), nothing queued in it outlives it, even when the session
    goes on to a next transaction."""
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_WROTE_PENDING_KEY, None)


# On the Session class, so every session (whichever factory made it) writes its entries.
event.listen(Session, "before_commit", _write_pending)
event.listen(Session, "after_commit", _chain_committed)
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
    """How many entries the log holds: chained (as the head records) and pending."""
    with db.read() as session:
        return read_head(session)[0] + pending_count(session)


# Entries waiting longer than this to be chained are reported (``stepup audit verify`` exits
# 1, the digest raises its alarm): the chainer adds them within a second when it runs.
PENDING_STALE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class PendingEntries:
    """Entries written but not yet chained: covered by nothing, verified by nothing."""

    count: int
    oldest_at: datetime | None  # the earliest ``at`` among them


def pending_entries(session: Session) -> PendingEntries:
    count, oldest = session.execute(
        select(func.count(), func.min(AUDIT_PENDING.c.at)).select_from(AUDIT_PENDING)
    ).one()
    return PendingEntries(int(count), oldest)


def pending_count(session: Session) -> int:
    return pending_entries(session).count


def pending_request_ids(session: Session) -> set[str]:
    """The requests with entries still pending."""
    return set(
        session.execute(
            select(AUDIT_PENDING.c.request_id)
            .where(AUDIT_PENDING.c.request_id.is_not(None))
            .distinct()
        ).scalars()
    )


def first_logged_data(session: Session, request_id: str, kind: AuditKind) -> str | None:
    """The data of the first entry of ``kind`` for the request, chained or still pending
    (the service reads its own entries back, e.g. the terms a request was decided under).

    One statement over both tables: under READ COMMITTED each statement sees its own
    snapshot, so reading ``audit_log`` and then ``audit_pending`` apart could fall between a
    chain pass's commit and find the entry in neither (it moved from one to the other)."""
    chained = select(
        _AUDIT.c.data.label("data"), literal(0).label("place"), _AUDIT.c.seq.label("position")
    ).where(_AUDIT.c.request_id == request_id, _AUDIT.c.kind == kind.value)
    pending = select(
        AUDIT_PENDING.c.data.label("data"),
        literal(1).label("place"),
        AUDIT_PENDING.c.id.label("position"),
    ).where(AUDIT_PENDING.c.request_id == request_id, AUDIT_PENDING.c.kind == kind.value)
    either = union_all(chained, pending).subquery()
    data = session.execute(
        select(either.c.data).order_by(either.c.place, either.c.position).limit(1)
    ).scalar_one_or_none()
    return None if data is None else str(data)


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


def checkpoint_schedule(db: Database) -> CheckpointSchedule | None:
    """The schedule ``sign_checkpoints`` gave ``db``, if any."""
    schedule: CheckpointSchedule | None = db.write_session_info.get(_CHECKPOINTS_KEY)
    return schedule


def checkpoint_head(db: Database, keyring: KeyRing, *, now: datetime) -> Checkpoint | None:
    """A signed checkpoint of the head, appended unless the head already is one: the
    checkpoint now last in the log (None while the log is empty).

    Under the head lock, so replicas that run this at once append one checkpoint, not one
    each; a log with nothing new since its last checkpoint gets none. Entries pending when
    it starts are chained first, so the checkpoint covers them.
    """
    from core.storage.audit_chainer import chain_pending

    chain_pending(db.engine, schedule=checkpoint_schedule(db))
    with db.write() as session:
        connection = session.connection()
        seq, head_hash = connection.execute(LOCK_HEAD).one()
        if seq == 0:
            return None
        last = connection.execute(select(*ENTRY_COLUMNS).where(_AUDIT.c.seq == seq)).one_or_none()
        if last is not None and last.kind == _CHECKPOINT_KIND:
            try:
                return verify_checkpoint(parse_checkpoint_entry(AuditEntry(*last)).signed, keyring)
            except (InvalidToken, ValueError, KeyError):
                pass  # not a checkpoint this service can vouch for: sign a fresh one
        checkpoint = sign_checkpoint(keyring, seq=seq, hash=head_hash, at=now)
        row = checkpoint_row(checkpoint)
        connection.execute(INSERT_ENTRIES, [row])
        connection.execute(WRITE_HEAD, {"new_seq": row["seq"], "new_hash": row["hash"]})
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
