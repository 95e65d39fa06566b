"""Engine creation: SQLite (WAL, immediate write transactions) or PostgreSQL via psycopg 3."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from core.errors import LostRace

DEFAULT_SQLITE_PATH = Path(".stepup") / "stepup.db"

log = logging.getLogger(__name__)


def unreachable_reason(exc: BaseException) -> str | None:
    """The driver's first line when ``exc`` says the database cannot be used, else None."""
    if isinstance(exc, OperationalError):
        return str(exc.orig).strip().splitlines()[0]
    return None


# What the driver or the pool raises when the database cannot serve a call: unreachable, out
# of connections, no connection free in the pool, busy (see ``unavailable_reason``).
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, PoolTimeout)


# SQLite result codes that say the database cannot serve now, not that the statement is wrong:
# BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL (a "no such table" is SQLITE_ERROR).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 10, 13, 14, 15})
# PostgreSQL SQLSTATE classes of the same kind: 08 connection exception, 53 insufficient
# resources (too many connections, disk full), 57 operator intervention (shutting down,
# statement cancelled or timed out), 40 a transaction the server rolled back (deadlock,
# serialisation: the same call may succeed). 54 (a program limit), F0 (configuration) and the
# rest mean the call itself is wrong.
_POSTGRES_UNAVAILABLE = frozenset({"08", "53", "57", "40"})


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database could not serve a call (unreachable, out of connections, no
    connection free in the pool, busy), or None when ``exc`` says something else: a missing
    table or a bad statement is a bug, not an outage."""
    if isinstance(exc, PoolTimeout):
        return "no database connection was free in time"
    if not isinstance(exc, OperationalError):
        return None
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:  # SQLite: the primary result code is the low byte
        return unreachable_reason(exc) if code & 0xFF in _SQLITE_UNAVAILABLE else None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None or sqlstate[:2] in _POSTGRES_UNAVAILABLE:  # None: no server answer
        return unreachable_reason(exc)
    return None


def default_database_url(base: Path | None = None) -> str:
    path = (base or Path.cwd()) / DEFAULT_SQLITE_PATH
    return f"sqlite:///{path}"


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def protect_sqlite_files(path: Path, *, create: bool = False) -> None:
    """Keep a SQLite database readable by its owner alone: the file and its ``-wal``/``-shm``
    0600 (SQLite gives the side files the database file's mode), in a directory created 0700.

    ``create`` makes missing directories (0700) and the database file itself (0600, empty:
    SQLite takes an empty file as a new database). An existing file loses any group or other
    bits but keeps a stricter mode; an existing directory is left as it is (it may be shared).
    """
    if create:
        _make_private_dirs(path.parent)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask was
            finally:
                os.close(fd)
    for file in (path, *(path.with_name(path.name + side) for side in SQLITE_SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & ~PRIVATE_FILE_MODE:
                file.chmod(mode & PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to change: say so, and carry on
            log.warning("cannot make %s private: %s", file, exc)


def _make_private_dirs(directory: Path) -> None:
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        created.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is filtered through the umask


def is_sqlite_url(url: str) -> bool:
    """Whether ``url`` names a SQLite database (parsed, not connected)."""
    return make_url(url).get_backend_name() == "sqlite"


DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_TIMEOUT_SECONDS = 10.0


def make_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
) -> Engine:
    """An engine with the settings stepup relies on.

    At most ``3 * pool_size`` connections (``pool_size`` kept, twice as many more under
    load); a call that finds none free for ``pool_timeout`` s fails (the API answers 503).

    SQLite: WAL so readers never block the writer, a busy timeout instead of instant
    "database is locked", and ``BEGIN IMMEDIATE`` for write transactions so the audit chain's
    head is read and advanced under one lock. PostgreSQL: ``psycopg`` (v3) driver.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            protect_sqlite_files(Path(database), create=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_timeout=pool_timeout,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin() below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("stepup_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_LOST_RACE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


class Database:
    """Owns the engine and hands out read and write sessions (one transaction each)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, pool_timeout=pool_timeout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock: AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        # Given to every write session's ``info``: how the audit appender signs checkpoints
        # (``core.storage.audit_store.sign_checkpoints``).
        self.write_session_info: dict[str, Any] = {}

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any exception.

        On SQLite, writers of this process queue on a lock first: SQLite admits one writer
        anyway, and its busy handler (sleeps of up to 100 ms between tries) would otherwise
        serve waiting writers in no order, which shows as multi-second tail latency.
        """
        try:
            with (
                self._write_lock,
                self.engine.connect().execution_options(stepup_write=True) as conn,
                Session(bind=conn, expire_on_commit=False, info=self.write_session_info) as session,
                session.begin(),
            ):
                yield session
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _LOST_RACE:
                # PostgreSQL broke a deadlock or a serialisation conflict by aborting this
                # transaction (two changes locking related requests in opposite orders):
                # nothing was written; the caller may try again.
                raise LostRace(
                    "another change to a related request won a race; nothing was written: retry"
                ) from exc
            raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def query(self) -> Iterator[Connection]:
        """A read transaction on a bare connection, for hot Core queries that need no ORM."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
