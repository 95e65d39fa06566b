"""A transaction PostgreSQL aborts to break a deadlock or a serialisation conflict is a 409
the caller may retry, not a 500; any other database error stays a 500."""

from __future__ import annotations

import httpx
import psycopg.errors
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from bot.api import problems
from tests.integration.live import running


class Raising:
    """A real server whose one route raises ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.app = FastAPI()
        problems.install(self.app)

        @self.app.post("/boom")
        def boom() -> None:
            raise exc

    def post(self, path: str) -> httpx.Response:
        with running(self.app) as url:
            return httpx.post(url + path, timeout=10)


def app_raising(exc: Exception) -> Raising:
    return Raising(exc)


@pytest.mark.parametrize(
    "original", [psycopg.errors.DeadlockDetected(), psycopg.errors.SerializationFailure()]
)
def test_a_lost_race_is_a_409_with_retry_after(original: Exception) -> None:
    answer = app_raising(OperationalError("UPDATE requests …", {}, original)).post("/boom")
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"] == "1"
    assert "retry" in answer.json()["detail"]


def test_another_database_error_stays_a_500() -> None:
    original = psycopg.errors.DiskFull()
    answer = app_raising(OperationalError("INSERT …", {}, original)).post("/boom")
    assert answer.status_code == 500
