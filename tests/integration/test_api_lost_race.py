"""A transaction PostgreSQL aborts to break a deadlock or a serialisation conflict is a 409
the caller may retry, not a 500; any other database error stays a 500. The error is raised
inside a real write transaction, where the storage layer tells a lost race apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg.errors
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from bot.api import problems
from core.storage.database import Database
from tests.integration.live import running


class Raising:
    """A real server whose one route raises ``exc`` inside a database write transaction."""

    def __init__(self, exc: Exception, db: Database) -> None:
        self.app = FastAPI()
        problems.install(self.app)

        @self.app.post("/boom")
        def boom() -> None:
            with db.write():
                raise exc

    def post(self, path: str) -> httpx.Response:
        with running(self.app) as url:
            return httpx.post(url + path, timeout=10)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'stepup.db'}")
    yield database
    database.dispose()


@pytest.mark.parametrize(
    "original", [psycopg.errors.DeadlockDetected(), psycopg.errors.SerializationFailure()]
)
def test_a_lost_race_is_a_409_with_retry_after(original: Exception, db: Database) -> None:
    answer = Raising(OperationalError("UPDATE requests …", {}, original), db).post("/boom")
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"] == "1"
    assert "retry" in answer.json()["detail"]


def test_another_database_error_stays_a_500(db: Database) -> None:
    original = psycopg.errors.DiskFull()
    answer = Raising(OperationalError("INSERT …", {}, original), db).post("/boom")
    assert answer.status_code == 500
