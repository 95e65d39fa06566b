"""The schema the migrations build is the schema the models describe, and deadlines are indexed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from core.storage.audit_store import iter_entries
from core.storage.database import Database
from core.storage.migrate import current_revision, upgrade
from core.storage.tables import Base, RequestRow


def test_migrations_match_the_models_and_are_idempotent(db: Database) -> None:
    upgrade(db.engine)  # second run: a no-op
    assert current_revision(db.engine) == "0009"
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with db.read() as session:
        assert session.execute(text("select seq, hash from audit_head")).one() == (0, "0" * 64)


def test_datetimes_round_trip_exactly(db: Database) -> None:
    at = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with db.write() as session:
        session.execute(
            text(
                "insert into audit_log (seq, at, kind, data, prev_hash, hash) values (1, :at, 'k', '{}', 'p', 'h')"
            ),
            {"at": at.replace(tzinfo=None) if db.is_sqlite else at},
        )
    with db.read() as session:
        entry = next(iter_entries(session))
    assert entry.at == at and entry.at.tzinfo is not None


def test_due_queries_use_the_deadline_indexes(db: Database) -> None:
    if not db.is_sqlite:
        return  # PostgreSQL's planner picks seq scans on tiny tables; the index exists (checked above)
    now = datetime.now(UTC)
    query = select(RequestRow.id).where(
        RequestRow.status == "pending", RequestRow.expires_at <= now
    )
    active = select(RequestRow.id).where(
        RequestRow.status == "active", RequestRow.credential_expires_at <= now + timedelta(1)
    )
    with db.read() as session:
        for stmt, index in (
            (query, "ix_requests_status_expires"),
            (active, "ix_requests_status_credential_expires"),
        ):
            compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
            plan = " ".join(
                str(r) for r in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            )
            assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
