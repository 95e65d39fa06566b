"""One leader among the processes sharing a PostgreSQL database, by a session advisory lock.

Each process (a replica, or a worker of ``stepup serve --workers N``) asks for the lock
with ``pg_try_advisory_lock`` on a connection of its own, every ``retry_seconds`` until it
gets it. The one holding it leads for as long as that connection lives: when the process
dies or its connection breaks, PostgreSQL releases the lock and another process takes over
within ``retry_seconds``. A leader checks its connection at the same pace and steps down
when it broke (the lock may already be someone else's).

Leadership here only says who does the periodic work (sweeps, checkpoints, the digest);
that work is idempotent anyway, so two leaders for an instant (a broken connection not yet
noticed) cost a duplicated pass, never a wrong result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from core.storage.pg_changes import conninfo

logger = logging.getLogger(__name__)

SCHEDULER_LOCK = 0x5354_5343  # an arbitrary, fixed advisory-lock key: the scheduler's leader


class PgLeadership:
    """Calls ``on_change(True)`` when this process becomes the leader, ``on_change(False)``
    when it stops being one (from its own thread); ``leading`` says which now."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[bool], None],
        *,
        key: int = SCHEDULER_LOCK,
        retry_seconds: float = 1.0,
    ) -> None:
        self._conninfo = conninfo(url)
        self._on_change = on_change
        self._key = key
        self._retry_seconds = retry_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.leading = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stepup-leadership", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Step down (another process takes over at once) and stop."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if self._conn is None:
                        self._try_lead()
                    else:
                        self._conn.execute("SELECT 1")  # still connected: still the leader
                except Exception as exc:  # leadership must outlive any one failure
                    if isinstance(exc, psycopg.Error):
                        logger.warning("scheduler leadership: %s", exc)
                    else:
                        logger.exception("scheduler leadership failed")
                    self._step_down()
                self._stopping.wait(self._retry_seconds)
        finally:
            self._step_down()

    def _try_lead(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=5
        )
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if not (row and row[0]):
            conn.close()
            return
        self._conn = conn
        self.leading.set()
        self._notify(True)

    def _step_down(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.close()  # closing the session releases the lock
        self.leading.clear()
        self._notify(False)

    def _notify(self, leading: bool) -> None:
        try:
            self._on_change(leading)
        except Exception:  # a broken callback must not stop the election
            logger.exception("leadership callback failed")
