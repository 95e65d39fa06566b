"""Shared fixtures: a real database per test, on SQLite always and on PostgreSQL when reachable.

PostgreSQL tests get a database of their own per test session (random name, dropped at the
end), so parallel or repeated runs never collide. Unreachable PostgreSQL skips those tests
with the reason shown, unless STEPUP_REQUIRE_POSTGRES=1 (set by .ci/run) makes it a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.storage.database import Database
from core.storage.migrate import upgrade
from core.storage.tables import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("STEPUP_REQUIRE_POSTGRES") == "1"

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _postgres_unavailable() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        where = make_url(POSTGRES_ADMIN_URL).render_as_string()
        return f"PostgreSQL unreachable at {where}: {exc.__class__.__name__}"
    return None


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (a new SQLite file is created)."""
    db = Database(url)
    upgrade(db.engine)
    db.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    reason = _postgres_unavailable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (STEPUP_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    name = f"stepup_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64}
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite in tmp_path, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stepup.db'}"
        migrate(url)
        yield url
        return
    url = request.getfixturevalue("postgres_database")
    db = Database(url)
    _reset_postgres(db)
    db.dispose()
    yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()
