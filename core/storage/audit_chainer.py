"""The chainer: moves pending audit entries into the hash chain, in one total order.

On PostgreSQL a state change writes its audit entries into ``audit_pending`` in its own
transaction (``audit_store``); a chain pass gives them their seq and hash in ``id`` order and
moves them into ``audit_log``, and the head with them, in one transaction: an entry is
either pending or chained, never lost and never both.

**Order.** Ids come from one sequence, handed out in increasing order, but transactions
commit in any order: while the transaction holding id 7 is still in flight, id 8 may already
be visible. A pass must not chain 8 and leave 7 to land after it. Each writer holds a
shared advisory lock (the *fence*) from inserting its pending entries until its commit; a
pass takes the fence exclusively for an instant, which waits out exactly the writers that
have inserted and not yet committed, and reads the highest id then visible: every id up to
it is settled (committed, or rolled back and never to appear). It chains those, and only
those, in id order. A writer inserts its entries last, after every row its transaction
changes (``SqlAuditAppender``), so of two transactions that change the same request the
one that commits first has the lower ids: a request's entries chain in the order of its
changes. (No time-based grace window: a transaction stalled between its insert and its
commit for any length of time still keeps its place.)

**One chainer at a time.** A pass locks the head row, so passes run one after another; a
second one finds the entries already moved. ``BackgroundChainer`` runs passes in a thread
of ``stepup serve``, on the replica that holds an advisory lock (the leader); the others
try to take over every second, so a replica that dies is replaced. Without one (the CLI,
tests, SQLite's inline chaining aside) the committing thread runs a pass after its commit.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text

from core.audit.checkpoints import CheckpointSchedule
from core.storage.audit_store import (
    AUDIT_PENDING,
    CHAINER_KEY,
    INSERT_ENTRIES,
    LOCK_HEAD,
    PENDING_FENCE,
    WRITE_HEAD,
    chain_rows,
    checkpoint_schedule,
)
from core.storage.database import Database

log = logging.getLogger(__name__)

BATCH = 5000  # entries chained per transaction
LEADER_LOCK = 0x5739_5552  # an arbitrary, fixed advisory-lock key: the replica that chains

_FENCE = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=PENDING_FENCE)
_SETTLED = select(func.max(AUDIT_PENDING.c.id))
_PENDING_FIELDS = (
    AUDIT_PENDING.c.id,
    AUDIT_PENDING.c.at,
    AUDIT_PENDING.c.kind,
    AUDIT_PENDING.c.request_id,
    AUDIT_PENDING.c.actor,
    AUDIT_PENDING.c.data,
)


def chain_pending(
    engine: Engine, *, schedule: CheckpointSchedule | None = None, batch: int = BATCH
) -> int:
    """Chain every settled pending entry, in id order; how many were chained.

    ``schedule`` signs a checkpoint whenever the chain passes a multiple of its N, as the
    inline path does."""
    with engine.connect() as conn:
        bound = _settled_bound(conn)
        if bound is None:
            return 0
        conn.execution_options(stepup_write=True)  # SQLite: BEGIN IMMEDIATE
        chained = 0
        while True:
            moved = _chain_batch(conn, bound, schedule, batch)
            chained += moved
            if moved < batch:
                return chained


def _settled_bound(conn: Connection) -> int | None:
    """The highest pending id no transaction still in flight can come in under."""
    with conn.begin():
        if conn.dialect.name != "sqlite":  # SQLite's single writer commits in id order
            conn.execute(_FENCE)  # waits out the writers between their insert and commit
        bound: int | None = conn.execute(_SETTLED).scalar_one_or_none()
        return bound


def _chain_batch(
    conn: Connection, bound: int, schedule: CheckpointSchedule | None, batch: int
) -> int:
    with conn.begin():
        seq, prev_hash = conn.execute(LOCK_HEAD).one()  # one pass at a time
        oldest = (
            select(AUDIT_PENDING.c.id)
            .where(AUDIT_PENDING.c.id <= bound)
            .order_by(AUDIT_PENDING.c.id)
            .limit(batch)
        )
        taken = sorted(
            conn.execute(
                delete(AUDIT_PENDING)
                .where(AUDIT_PENDING.c.id.in_(oldest.scalar_subquery()))
                .returning(*_PENDING_FIELDS)
            ).all(),
            key=lambda row: int(row.id),
        )
        if not taken:
            return 0
        rows: list[dict[str, Any]] = [
            {
                "at": row.at,
                "kind": row.kind,
                "request_id": row.request_id,
                "actor": row.actor,
                "data": row.data,
            }
            for row in taken
        ]
        rows = chain_rows(rows, seq=seq, prev_hash=prev_hash, schedule=schedule)
        conn.execute(INSERT_ENTRIES, rows)
        conn.execute(WRITE_HEAD, {"new_seq": rows[-1]["seq"], "new_hash": rows[-1]["hash"]})
        return len(taken)


class BackgroundChainer:
    """Chains the pending entries of ``db`` in a thread, within ``interval`` seconds of their
    commit, when this process leads (holds the leader lock); see the module's docstring.

    While it runs, the write sessions of ``db`` leave chaining to it (they ``wake`` it
    instead of chaining after their commit). Passes are at least ``min_gap`` apart: a
    burst of commits is chained in one pass, and the fence is taken a few times a second
    at most."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = 0.25,
        min_gap: float = 0.2,
        takeover_every: float = 1.0,
    ) -> None:
        self.db = db
        self.interval = interval
        self.min_gap = min_gap
        self.takeover_every = takeover_every
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._leader: Connection | None = None

    @property
    def leading(self) -> bool:
        return self._leader is not None

    def start(self) -> None:
        self.db.write_session_info[CHAINER_KEY] = self
        self._thread = threading.Thread(target=self._run, name="audit-chainer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A commit wrote pending entries: chain soon."""
        self._wanted.set()

    def stop(self) -> None:
        """Stop the thread and chain what is left (write sessions chain their own again)."""
        self.db.write_session_info.pop(CHAINER_KEY, None)
        self._stopping.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            chain_pending(self.db.engine, schedule=checkpoint_schedule(self.db))
        except Exception:
            log.exception("the last audit chain pass failed; the entries stay pending")
        self._release()

    def _run(self) -> None:
        """Never dies while the chainer runs: a failure (the database restarting, a full pool)
        is logged and retried after a pause; if the loop ends some other way, write sessions
        chain their own entries again."""
        try:
            while not self._stopping.is_set():
                try:
                    self._turn()
                except Exception:
                    log.exception("audit chainer: a turn failed; retrying")
                    self._release()
                    self._stopping.wait(self.takeover_every)
        finally:
            if not self._stopping.is_set():
                self.db.write_session_info.pop(CHAINER_KEY, None)

    def _turn(self) -> None:
        if self._try_lead():
            self._wanted.wait(self.interval)
            if self._stopping.is_set():
                return
            self._wanted.clear()
            self.run_once()
            self._stopping.wait(self.min_gap)
        else:
            self._stopping.wait(self.takeover_every)

    def run_once(self) -> int:
        try:
            return chain_pending(self.db.engine, schedule=checkpoint_schedule(self.db))
        except Exception:
            log.exception("audit chain pass failed; the entries stay pending and are retried")
            self._release()  # a broken connection may have lost the lock anyway
            return 0

    def _try_lead(self) -> bool:
        if self._leader is not None:
            return True
        if self.db.is_sqlite:
            return True  # one database file, one writer at a time: no election needed
        try:
            conn = self.db.engine.connect()
        except Exception:
            log.exception("could not connect to ask for the audit chainer's lock; retrying")
            return False
        try:
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}
                ).scalar_one()
            )
            conn.commit()  # the lock is the session's: it outlives the transaction
        except Exception:
            conn.close()
            log.exception("could not ask for the audit chainer's lock; retrying")
            return False
        if not got:
            conn.close()
            return False
        self._leader = conn
        log.info("this replica chains the audit log")
        return True

    def _release(self) -> None:
        leader, self._leader = self._leader, None
        if leader is None:
            return
        try:
            leader.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK})
            leader.commit()
        except Exception:
            leader.invalidate()  # closing the session releases the lock
        finally:
            leader.close()
