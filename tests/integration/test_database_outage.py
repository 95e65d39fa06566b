"""A database that goes away answers 503, not 500: on a real PostgreSQL, the API's database is
dropped under a running server (its connections terminated, new ones refused); the agent API
then answers problem details with status 503, type database-unavailable and Retry-After, with
nothing of the driver's message in the body, and the Python client retries a safe call as it
does after any 503. A genuine bug still answers 500."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.agents import AgentRegistry
from core.storage.database import Database
from core.storage.migrate import upgrade
from stepup_client import ApiError, StepupClient
from tests.conftest import POSTGRES_ADMIN_URL, T0
from tests.integration.live import running
from tests.support import OWNER, build_engine, submit_body

pytestmark = pytest.mark.postgres


@pytest.fixture
def doomed_database(postgres_database: str) -> Iterator[tuple[str, str]]:
    """A migrated PostgreSQL database of its own (the test drops it); its URL and name.
    ``postgres_database`` is asked for so that an unreachable server skips (or fails) alike."""
    name = f"stepup_outage_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrated = Database(url)
        upgrade(migrated.engine)
        migrated.dispose()
        yield url, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def drop(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_database_gone_under_the_server_is_a_503_problem(
    doomed_database: tuple[str, str], tmp_path: Path
) -> None:
    url, name = doomed_database
    db = Database(url)
    engine = build_engine(db, tmp_path)
    registry = AgentRegistry(engine.service)
    key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    broken = APIRouter()

    @broken.get("/v1/test-bug")
    def bug() -> None:
        raise ZeroDivisionError("a genuine bug")

    app = create_app(ApiContext(service=engine.service, registry=registry), extra_routers=[broken])
    headers = {"Authorization": f"Bearer {key}"}
    body = submit_body(action_class="read", environment="staging")
    try:
        with running(app) as base, httpx.Client(base_url=base, headers=headers) as client:
            created = client.post("/v1/requests", json=body)
            assert created.status_code == 201
            request_id = created.json()["id"]
            drop(name)
            for call in (
                lambda: client.get(f"/v1/requests/{request_id}"),
                lambda: client.post("/v1/requests", json=body),
            ):
                answer = call()
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["Retry-After"] == "1"
                problem = answer.json()
                assert problem["type"] == "https://stepup.dev/problems/database-unavailable"
                assert problem["status"] == 503 and "retry" in problem["detail"]
                assert name not in answer.text and "psycopg" not in answer.text
            assert client.get("/healthz").status_code == 200  # the process itself is fine
            assert client.get("/v1/test-bug").status_code == 500  # a bug is still a bug
            with (
                StepupClient(base, key, retries=2, backoff=0.01) as agent,
                pytest.raises(ApiError) as refused,
            ):
                agent.get(request_id)
            assert refused.value.status == 503 and refused.value.attempts == 3  # retried
    finally:
        db.dispose()
