"""Alembic environment: the engine is handed in by core.storage.migrate, never looked up."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from core.storage.tables import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only reached when misused
    raise RuntimeError("run migrations through core.storage.migrate (stepup db upgrade)")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
