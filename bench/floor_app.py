"""The floor for api_bench: a bare FastAPI endpoint doing one SQLAlchemy insert, nothing else.

Same framework, same server (uvicorn), same threadpool model (a sync handler) and the same
engine settings as stepup (``core.storage.database.Database``: WAL and ``BEGIN IMMEDIATE`` on
SQLite, psycopg 3 on PostgreSQL). Run: ``python bench/floor_app.py --database-url URL --port N``.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, insert

from core.storage.database import Database

metadata = MetaData()
floor_rows = Table(
    "bench_floor",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
)


def create_app(db: Database, threads: int | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if threads is not None:  # as stepup's STEPUP_API_THREADS does; None: anyio's 40
            to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(title="stepup bench floor", lifespan=lifespan)

    @app.post("/floor", status_code=201)
    def write(body: dict[str, Any]) -> dict[str, str]:
        row_id = uuid.uuid4().hex
        with db.write() as session:
            session.execute(
                insert(floor_rows).values(
                    id=row_id, created_at=datetime.now(UTC), body=json.dumps(body)
                )
            )
        return {"id": row_id}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, help="worker threads (default: anyio's 40)")
    args = parser.parse_args()
    db = Database(args.database_url)
    metadata.create_all(db.engine)
    try:
        uvicorn.run(
            create_app(db, args.threads), host=args.host, port=args.port, log_level="warning"
        )
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
