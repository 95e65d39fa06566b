"""Request changes committed by another process on the same SQLite file, heard within ~50 ms.

PostgreSQL tells replicas about each other's changes with ``LISTEN``/``NOTIFY``
(``core.storage.pg_changes``); SQLite has no such channel. What it has is ``PRAGMA
data_version``: a number, read from the shared WAL index without touching the database pages,
that changes on a connection whenever *another* connection (of this process or any other)
has committed since the last time it was read. So, while at least one request is waited on,
one dedicated connection reads it every ``interval`` seconds; when it moved, one query reads
the status of every request waited on, and only those whose status changed are woken. The
first time a request is seen it is woken once as well: its waiter read it before the watch
did, and a change in between would otherwise pass unseen. With nobody waiting, nothing runs.

Commits of this process move ``data_version`` too (another pooled connection); they cost one
query per tick, and wake nothing more than the process's own notification already did.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy.engine import make_url

from core.storage.tables import RequestRow

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.05
# One statement whatever the number of ids (a JSON array), so no bound on parameters applies.
_STATUSES = (
    f"SELECT id, status FROM {RequestRow.__tablename__} "  # noqa: S608 (a constant name)
    "WHERE id IN (SELECT value FROM json_each(?))"
)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for anything else (PostgreSQL, in-memory, ``file:``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class SqliteChangeWatch:
    """Wakes the waiters on requests another connection changed.

    ``waited()`` returns the ids waited on right now (any thread); ``on_change(id)`` wakes the
    waiters on one request (called from the watch's thread); ``someone_waits`` is set while
    ``waited()`` may be non-empty.
    """

    def __init__(
        self,
        path: Path,
        waited: Callable[[], Collection[str]],
        on_change: Callable[[str], None],
        someone_waits: threading.Event,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._path = path
        self._waited = waited
        self._on_change = on_change
        self._someone_waits = someone_waits
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, str] = {}
        self.changes_heard = 0  # wake-ups for a status seen to change
        self.first_looks = 0  # wake-ups for a request seen for the first time

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stepup-sqlite-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._someone_waits.set()  # out of an idle wait at once
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.is_set():
                if not self._someone_waits.wait(1.0) or self._stopping.is_set():
                    continue
                try:
                    if conn is None:
                        conn = self._connect()
                    self._watch(conn)
                except Exception as exc:  # the watch must outlive any one failure
                    if isinstance(exc, sqlite3.Error):
                        logger.warning("SQLite change watch: %s; retrying in 1 s", exc)
                    else:
                        logger.exception("SQLite change watch failed; retrying in 1 s")
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._seen.clear()  # start again: every waiter re-reads once
                    self._stopping.wait(1.0)
        finally:
            if conn is not None:
                conn.close()

    def _watch(self, conn: sqlite3.Connection) -> None:
        """While someone waits: check the version every interval, the statuses when it moved."""
        version = _data_version(conn)
        self._check(conn)
        while not self._stopping.wait(self._interval):
            if not self._someone_waits.is_set():
                self._seen.clear()
                return
            current = _data_version(conn)
            if current != version:
                version = current
                self._check(conn)
            elif self._unseen():
                self._check(conn)  # a new waiter: its first look, then the version tells

    def _unseen(self) -> bool:
        return any(request_id not in self._seen for request_id in self._waited())

    def _check(self, conn: sqlite3.Connection) -> None:
        waited = list(dict.fromkeys(self._waited()))
        rows = conn.execute(_STATUSES, (json.dumps(waited),))
        statuses = {str(row[0]): str(row[1]) for row in rows}
        for request_id in waited:
            status = statuses.get(request_id)
            if status is None:
                continue  # not there (yet): the route answers 404 on its own
            before = self._seen.get(request_id)
            if before != status:
                self._seen[request_id] = status
                if before is None:
                    self.first_looks += 1
                else:
                    self.changes_heard += 1
                try:
                    self._on_change(request_id)
                except Exception:  # a broken callback must not stop the watch
                    logger.exception("change callback failed for %s", request_id)
        for gone in self._seen.keys() - set(waited):
            del self._seen[gone]


def _data_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA data_version").fetchone()
    return int(row[0])
