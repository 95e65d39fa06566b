"""A database that goes away answers 503, not 500: on a real PostgreSQL, the API's database is
dropped under a running server (its connections terminated, new ones refused); the agent API
then answers problem details with status 503, type database-unavailable and Retry-After, with
nothing of the driver's message in the body, and the Python client retries a safe call as it
does after any 503. A genuine bug still answers 500, a database error that says the statement
is wrong (a column renamed under the server) included, on both databases. A pool with every
connection taken (STEPUP_DB_POOL_SIZE, STEPUP_DB_POOL_TIMEOUT_SECONDS) answers the same 503
after its timeout, on both databases, and serves again once a connection is free."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.settings import Settings
from bot.wiring import open_database
from core.agents import AgentRegistry
from core.storage.database import Database
from stepup_client import ApiError, StepupClient
from tests.conftest import POSTGRES_ADMIN_URL, T0, migrate
from tests.integration.live import running
from tests.support import OWNER, build_engine, submit_body


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
        migrate(url)
        yield url, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass(frozen=True)
class Api:
    url: str
    key: str  # an agent's
    client: httpx.Client  # calling as that agent


@contextmanager
def api_on(db: Database, tmp_path: Path, *routers: APIRouter) -> Iterator[Api]:
    """The API on ``db`` (and ``routers``), served on loopback, with one agent; ``db`` is
    disposed of after."""
    engine = build_engine(db, tmp_path)
    registry = AgentRegistry(engine.service)
    key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    app = create_app(
        ApiContext(service=engine.service, registry=registry), extra_routers=list(routers)
    )
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with running(app) as url, httpx.Client(base_url=url, headers=headers) as client:
            yield Api(url, key, client)
    finally:
        db.dispose()


def assert_database_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["type"] == "https://stepup.dev/problems/database-unavailable"


def drop(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_a_database_gone_under_the_server_is_a_503_problem(
    doomed_database: tuple[str, str], tmp_path: Path
) -> None:
    url, name = doomed_database
    broken = APIRouter()

    @broken.get("/v1/test-bug")
    def bug() -> None:
        raise ZeroDivisionError("a genuine bug")

    body = submit_body(action_class="read", environment="staging")
    with api_on(Database(url), tmp_path, broken) as api:
        client = api.client
        created = client.post("/v1/requests", json=body)
        assert created.status_code == 201
        request_id = created.json()["id"]
        drop(name)
        for call in (
            lambda: client.get(f"/v1/requests/{request_id}"),
            lambda: client.post("/v1/requests", json=body),
        ):
            answer = call()
            assert_database_unavailable(answer)
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            assert problem["status"] == 503 and "retry" in problem["detail"]
            assert name not in answer.text and "psycopg" not in answer.text
        assert client.get("/healthz").status_code == 200  # the process itself is fine
        assert client.get("/v1/test-bug").status_code == 500  # a bug is still a bug
        with (
            StepupClient(api.url, api.key, retries=2, backoff=0.01) as agent,
            pytest.raises(ApiError) as refused,
        ):
            agent.get(request_id)
        assert refused.value.status == 503 and refused.value.attempts == 3  # retried


def test_a_pool_with_every_connection_taken_answers_503_after_its_timeout(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPUP_DATABASE_URL", database_url)
    monkeypatch.setenv("STEPUP_DB_POOL_SIZE", "1")  # 1 kept + 2 overflow = 3 at most
    monkeypatch.setenv("STEPUP_DB_POOL_TIMEOUT_SECONDS", "0.3")
    db = open_database(Settings(_env_file=None), migrate=False)  # type: ignore[call-arg]
    assert db.engine.pool.size() == 1
    with api_on(db, tmp_path) as api:
        created = api.client.post("/v1/requests", json=submit_body(action_class="read"))
        assert created.status_code == 201
        path = f"/v1/requests/{created.json()['id']}"
        with ExitStack() as held:
            for _ in range(3):  # every connection the pool may open, taken
                held.enter_context(db.engine.connect())
            started = time.monotonic()
            assert_database_unavailable(api.client.get(path))
            assert time.monotonic() - started < 10  # the pool's timeout, not 30 s
        assert api.client.get(path).status_code == 200  # connections free again: served


def test_the_pool_settings_are_bounded() -> None:
    with pytest.raises(ValueError, match="STEPUP_DB_POOL_SIZE"):
        Settings(_env_file=None, STEPUP_DB_POOL_SIZE=0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="STEPUP_DB_POOL_TIMEOUT_SECONDS"):
        Settings(_env_file=None, STEPUP_DB_POOL_TIMEOUT_SECONDS=0)  # type: ignore[call-arg]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database this test may damage: a SQLite file, or a PostgreSQL database of
    its own (never the session's shared one)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'own.db'}"
        migrate(url)
        return url
    url, _ = request.getfixturevalue("doomed_database")
    return str(url)


def test_a_statement_the_schema_refuses_is_a_bug_not_an_outage(
    own_database: str, tmp_path: Path
) -> None:
    """SQLite reports "no such column" as an OperationalError, like "database is locked":
    only the second is the database being unavailable."""
    db = Database(own_database)
    with api_on(db, tmp_path) as api:
        created = api.client.post("/v1/requests", json=submit_body(action_class="read"))
        assert created.status_code == 201
        with db.engine.begin() as conn:  # a migration that went wrong, say
            conn.execute(text("ALTER TABLE requests RENAME COLUMN target TO target_gone"))
        db.engine.dispose()  # no connection keeps a statement prepared for the old table
        answer = api.client.get(f"/v1/requests/{created.json()['id']}")
        assert answer.status_code == 500, answer.text
        assert answer.json()["type"] == "https://stepup.dev/problems/internal-error"
        assert "Retry-After" not in answer.headers
        assert api.client.get("/healthz").status_code == 200  # the connection still serves
