"""End to end on the real PostgreSQL: a rule with the ``postgres`` issuer hands the agent a
login of its own through the real HTTP API, and every way a request ends drops that login.

- claim → the agent connects with ``secret.dsn`` and reads the granted table, nothing else;
  complete → its open connection is cut and a new login fails; the role is gone;
- a request left to its TTL: the scheduler drops the role, also across ``kill -9`` of
  ``stepup serve`` and a restart after the TTL (the start-up sweep);
- two replicas sweeping the same revocations: each role is dropped exactly once;
- two claims at once: one login kept, the loser's revoked at once; a reload that removes the
  issuer still lets its logins be dropped;
- an issuer that cannot issue: 502, the request stays approved, claim again once fixed; one
  that cannot revoke: retried with backoff, alerted, done once it can;
- a grant filled from the request: an unsafe parameter is refused at submit (422). Here the
  parameter names the role joined (``member_of``); keys take placeholders too (``tables:
  {"{parameters.table}": …}``, docs/issuers.md; filled keys are tested in
  tests/unit/issuers/test_grants.py).

The module gets a database of its own on the server (tables ``orders`` and ``secrets``, a role
that may only read ``orders``); every role name starts with the run's tag and each test's
logins with a prefix of their own, all dropped at the end even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.scheduler import DeadlineScheduler
from core.agents import AgentRegistry
from core.issuers.base import Grant, Issued, IssueRequest
from core.issuers.postgres import PostgresGrant, PostgresIssuer, PostgresSettings
from core.storage.database import Database
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, T0, _postgres_unavailable
from tests.integration.live import free_port, running
from tests.integration.test_serve import add_agent, env_for, serving
from tests.support import OWNER, Engine, build_engine, eventually, submit_body

pytestmark = pytest.mark.postgres

ISSUED = {"username", "password", "host", "port", "database", "dsn"}


# -- the PostgreSQL side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The module's database on the server; ``tag`` starts every role made here."""

    server_url: str  # libpq URL: the admin on the server's default database
    admin_dsn: str  # the same admin on the module's database (the issuer's admin DSN)
    database: str
    tag: str

    @property
    def reader(self) -> str:
        return f"{self.tag}_orders_reader"

    @property
    def powerless(self) -> str:
        """A login that may connect but not create roles."""
        return f"{self.tag}_nocreate"

    def dsn_as(self, user: str) -> str:
        return make_url(self.admin_dsn).set(username=user, password=None).render_as_string()

    def roles(self, prefix: str) -> list[str]:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY 1", [prefix]
            ).fetchall()
        return [name for (name,) in rows]

    def valid_until(self, role: str) -> datetime | None:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [role]
            ).fetchone()
        return None if row is None else row[0]


def _libpq(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


def _drop_roles(target: Target, prefix: str) -> None:
    """Every role starting with ``prefix``: sessions ended, what it holds in the module's
    database dropped, then the role. Tolerant: a cleanup must not hide the test's failure."""
    for role in target.roles(prefix):
        ident = sql.Identifier(role)
        try:
            with psycopg.connect(target.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    [role],
                )
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        except psycopg.Error:
            pass  # the database may be gone already: then nothing in it holds the role
        with psycopg.connect(target.server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    reason = _postgres_unavailable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (STEPUP_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    tag = "stepup_" + secrets.token_hex(4)  # 15 characters; logins add 5, then 24 hex
    server_url = _libpq(POSTGRES_ADMIN_URL, make_url(POSTGRES_ADMIN_URL).database or "postgres")
    found = Target(server_url, _libpq(POSTGRES_ADMIN_URL, tag), tag, tag)
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(tag)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(found.reader)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(found.powerless)))
        with psycopg.connect(found.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            for statement in (
                "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)",
                "INSERT INTO orders VALUES (1, 'book'), (2, 'pen')",
                "CREATE TABLE secrets (id int, value text)",
                "INSERT INTO secrets VALUES (1, 'launch codes')",
            ):
                conn.execute(statement)
            conn.execute(
                sql.SQL("GRANT SELECT ON orders TO {}").format(sql.Identifier(found.reader))
            )
        yield found
    finally:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(tag))
            )
        _drop_roles(found, tag)


@dataclass(frozen=True)
class Issuing:
    """One test's issuer: the environment variable of its admin DSN, its login prefix."""

    target: Target
    env: str
    prefix: str
    monkeypatch: pytest.MonkeyPatch

    def policy(self) -> str:
        reader = self.target.reader
        return f"""\
version: 1
issuers:
  orders-db:
    type: postgres
    admin_dsn_env: {self.env}
    role_prefix: {self.prefix}
rules:
  - name: orders-read
    match: {{ action: db.query, target: orders-db }}
    decision: allow
    max_ttl: 5m
    issuer: orders-db
    grant: {{ member_of: [{reader}] }}
  - name: read-by-table
    match: {{ action: db.table_read, target: orders-db }}
    decision: allow
    max_ttl: 5m
    issuer: orders-db
    grant: {{ member_of: ["{self.target.tag}_{{parameters.table}}_reader"] }}
"""

    def logins(self) -> list[str]:
        return self.target.roles(self.prefix)

    def set_dsn(self, dsn: str | None) -> None:
        if dsn is None:
            self.monkeypatch.delenv(self.env, raising=False)
        else:
            self.monkeypatch.setenv(self.env, dsn)  # the service reads os.environ


@pytest.fixture
def issuing(target: Target, monkeypatch: pytest.MonkeyPatch) -> Iterator[Issuing]:
    suffix = secrets.token_hex(2)
    found = Issuing(
        target, f"E2E_ORDERS_DB_{suffix}_{os.getpid()}_DSN", f"{target.tag}{suffix}_", monkeypatch
    )
    found.set_dsn(target.admin_dsn)
    try:
        yield found
    finally:
        _drop_roles(target, found.prefix)


# -- the stepup side --------------------------------------------------------------------------


@dataclass
class Live:
    url: str
    engine: Engine
    agent_key: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.agent_key}"}, timeout=30
        )


@contextmanager
def live(db: Database, tmp_path: Path, policy: str, agent_key: str | None = None) -> Iterator[Live]:
    """The real API on a free loopback port over ``db``; a new agent unless ``agent_key``."""
    engine = build_engine(db, tmp_path, policy)
    registry = AgentRegistry(engine.service)
    key = agent_key or registry.add("orders-bot", OWNER, by="test", now=T0)
    context = ApiContext(service=engine.service, registry=registry)
    with running(create_app(context)) as url:
        yield Live(url, engine, key)


def read_body(**extra: Any) -> dict[str, Any]:
    return (
        submit_body(
            action="db.query",
            action_class="read",
            target="orders-db",
            environment="production",
            justification="count yesterday's orders",
            parameters={"day": "2026-11-01"},
        )
        | extra
    )


def approved(http: httpx.Client, body: dict[str, Any]) -> str:
    answer = http.post("/v1/requests", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "approved", answer.text
    return str(answer.json()["id"])


def claimed(http: httpx.Client, request_id: str) -> dict[str, Any]:
    answer = http.post(f"/v1/requests/{request_id}/credential")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["credential_type"] == "postgres"
    assert set(body["secret"]) == ISSUED
    return body


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def assert_login_fails(dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError):
        connect(dsn).close()


def assert_cut_off(conn: psycopg.Connection[Any]) -> None:
    """The agent's open connection was terminated: its next statement fails."""
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT count(*) FROM orders")


def audit_rows(engine: Any, request_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    query = "SELECT kind, data FROM audit_log"
    params: dict[str, Any] = {}
    if request_id is not None:
        query += " WHERE request_id = :r"
        params["r"] = request_id
    with engine.connect() as conn:
        rows = conn.execute(text(query + " ORDER BY seq"), params).all()
    return [(kind, json.loads(data)) for kind, data in rows]


def issuer_revoked(rows: list[tuple[str, dict[str, Any]]], jti: str) -> int:
    return sum(
        1 for kind, data in rows if kind == "credential.issuer_revoked" and data["jti"] == jti
    )


def table_count(engine: Any, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- 1. claim, read what is granted and nothing else, complete ---------------------------------


def test_claim_opens_only_the_granted_table_and_complete_shuts_the_door(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        request_id = approved(http, read_body())
        answer = claimed(http, request_id)
        secret = answer["secret"]
        role = secret["username"]
        assert role.startswith(issuing.prefix) and issuing.logins() == [role]
        assert (secret["host"], secret["port"], secret["database"]) == (
            "127.0.0.1",
            5432,
            issuing.target.database,
        )
        expires_at = datetime.fromisoformat(answer["expires_at"])
        assert issuing.target.valid_until(role) == expires_at  # VALID UNTIL = the credential's
        assert expires_at - datetime.now(UTC) <= timedelta(minutes=5)

        conn = connect(secret["dsn"])
        try:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            rows = conn.execute("SELECT id, item FROM orders ORDER BY id").fetchall()
            assert rows == [(1, "book"), (2, "pen")]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO orders VALUES (3, 'forged')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE orders SET item = 'x'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT value FROM secrets")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE ROLE escalated")

            done = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "succeeded"})
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "completed"
            # Revoked right after the commit, before the answer: the door is shut now.
            assert_cut_off(conn)
        finally:
            conn.close()
        assert_login_fails(secret["dsn"])
        assert issuing.logins() == []

    rows = audit_rows(db.engine, request_id)
    assert issuer_revoked(rows, answer["jti"]) == 1
    issued = [data for kind, data in rows if kind == "credential.issued"]
    assert issued[0]["handle"] == role and issued[0]["credential_type"] == "postgres"
    # The secret is shown once: in no table of stepup's.
    with db.engine.connect() as c:
        dumped = [
            repr(c.execute(text(f"SELECT * FROM {t}")).all())
            for t in ("audit_log", "credentials", "revocations", "requests", "outbox")
        ]
    assert not any(secret["password"] in d for d in dumped)
    with db.engine.connect() as c:
        row = c.execute(
            text("SELECT status, attempts, handle FROM revocations WHERE jti = :j"),
            {"j": answer["jti"]},
        ).one()
    assert tuple(row) == ("done", 1, role)


# -- 2. left to its TTL: the scheduler drops the role; also across kill -9 and a restart --------


def test_a_request_left_to_its_ttl_loses_its_login(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        scheduler = DeadlineScheduler(api.engine.service, sweep_interval_seconds=0.5)
        scheduler.start()
        try:
            request_id = approved(http, read_body(requested_ttl_seconds=2))
            answer = claimed(http, request_id)
            secret = answer["secret"]
            expires_at = datetime.fromisoformat(answer["expires_at"])
            assert expires_at <= datetime.now(UTC) + timedelta(seconds=2)
            conn = connect(secret["dsn"])
            try:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
                early = (expires_at - datetime.now(UTC)).total_seconds() - 0.4
                time.sleep(min(max(early, 0.0), 2.0))
                logins, seen_at = issuing.logins(), datetime.now(UTC)
                if seen_at < expires_at - timedelta(seconds=0.1):  # not dropped before its time
                    assert logins == [secret["username"]]
                eventually(
                    issuing.logins,
                    until=lambda roles: roles == [],
                    timeout=20,
                    interval=0.1,
                    message="the expired login was not dropped",
                )
                assert datetime.now(UTC) >= expires_at  # not before its time
                assert_cut_off(conn)
            finally:
                conn.close()
            assert_login_fails(secret["dsn"])
            status = eventually(
                lambda: http.get(f"/v1/requests/{request_id}").json()["status"],
                until=lambda s: s == "revoked",
                message="the request did not end",
            )
            assert status == "revoked"
        finally:
            scheduler.shutdown()
    assert issuer_revoked(audit_rows(db.engine, request_id), answer["jti"]) == 1


def test_the_restart_after_a_kill_9_drops_the_login_that_expired_meanwhile(
    tmp_path: Path, issuing: Issuing
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(issuing.policy())
    port = free_port()
    env = env_for(
        tmp_path,
        port,
        STEPUP_POLICY_FILE=str(policy),
        STEPUP_SANDBOX="0",
        **{issuing.env: issuing.target.admin_dsn},
    )
    key = add_agent(env, tmp_path, "orders-bot")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    conn: psycopg.Connection[Any] | None = None
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        try:
            with serving(tmp_path, env) as proc:
                request_id = approved(http, read_body(requested_ttl_seconds=3))
                answer = claimed(http, request_id)
                conn = connect(answer["secret"]["dsn"])
                proc.kill()  # no clean shutdown: the deadline job dies with the process
                proc.wait(timeout=10)
            expires_at = datetime.fromisoformat(answer["expires_at"])
            role = answer["secret"]["username"]
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
            wait = (expires_at - datetime.now(UTC)).total_seconds() + 0.5
            time.sleep(min(max(wait, 0.0), 5.0))
            # A crash between the issuer's answer and the claim's commit leaves a login that
            # no request knows: the restart's orphan sweep drops it once expired, too.
            orphan = _mint_directly(issuing, expires_at)
            assert datetime.now(UTC) > expires_at
            # Nobody dropped them while stepup was down.
            assert sorted(issuing.logins()) == sorted([role, orphan])
            with serving(tmp_path, env):
                eventually(
                    issuing.logins,
                    until=lambda roles: roles == [],
                    timeout=30,
                    interval=0.2,
                    message="the restart did not drop the expired login",
                )
                status = eventually(
                    lambda: http.get(f"/v1/requests/{request_id}").json()["status"],
                    until=lambda s: s == "revoked",
                    timeout=10,
                    message="the restart did not end the request",
                )
                assert status == "revoked"
            assert_cut_off(conn)
        finally:
            if conn is not None:
                conn.close()
        assert_login_fails(answer["secret"]["dsn"])
    with closing(sqlite3.connect(tmp_path / ".stepup" / "stepup.db")) as store:
        rows = store.execute(
            "SELECT data FROM audit_log WHERE kind = 'credential.issuer_revoked'"
        ).fetchall()
    assert [json.loads(data)["jti"] for (data,) in rows] == [answer["jti"]]


def _mint_directly(issuing: Issuing, expires_at: datetime) -> str:
    """A login made by the issuer as a claim would, that no request records."""
    settings = PostgresSettings(admin_dsn_env=issuing.env, role_prefix=issuing.prefix)
    issuer = PostgresIssuer("orders-db", settings, {issuing.env: issuing.target.admin_dsn})
    minted = issuer.issue(
        PostgresGrant(member_of=[issuing.target.reader]),
        IssueRequest(
            request_id="req_crashed",
            agent="orders-bot",
            action="db.query",
            target="orders-db",
            environment="production",
            args_digest="sha256:" + "0" * 64,
        ),
        expires_at,
    )
    return minted.handle


# -- 3. two replicas: each role dropped once ----------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_replicas_drop_each_login_exactly_once(
    db: Database, database_url: str, tmp_path: Path, issuing: Issuing
) -> None:
    other = Database(database_url)  # the second replica: its own pool on the same database
    try:
        with (
            live(db, tmp_path, issuing.policy()) as one,
            live(other, tmp_path, issuing.policy(), agent_key=one.agent_key) as two,
        ):
            _replicas(one, two, issuing)
    finally:
        other.dispose()


def _count_revokes(engine: Engine, calls: dict[str, int], lock: threading.Lock) -> None:
    """Wrap the replica's built issuer: how many times each handle reached PostgreSQL."""
    built = engine.service.parts.issuers.get("orders-db")
    revoke = built.revoke

    def counting(handle: str) -> None:
        with lock:
            calls[handle] = calls.get(handle, 0) + 1
        revoke(handle)

    built.revoke = counting  # type: ignore[method-assign]


def _together(*jobs: Callable[[], None]) -> None:
    """Run the jobs at once on threads of their own; re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a replica did not finish"
    if errors:
        raise errors[0]


def _replicas(one: Live, two: Live, issuing: Issuing) -> None:
    calls: dict[str, int] = {}
    lock = threading.Lock()
    for replica in (one, two):
        _count_revokes(replica.engine, calls, lock)
    engine = one.engine.db.engine
    with one.client() as http_one, two.client() as http_two:
        # Phase 1: the revocation right after the commit is lost (a replica died after it
        # committed); both replicas' sweeps then find the same due revocations at once.
        for replica in (one, two):
            replica.engine.service.parts.revoke_soon = lambda jtis, now: None
        answers = [claimed(http_one, approved(http_one, read_body())) for _ in range(6)]
        assert len(issuing.logins()) == 6
        for answer in answers[:3]:
            done = http_two.post(
                f"/v1/requests/{answer['request_id']}/complete", json={"outcome": "succeeded"}
            )
            assert done.status_code == 200, done.text
        later = datetime.now(UTC) + timedelta(minutes=10)  # past the other three's TTL
        expired: list[int] = []
        _together(
            lambda: expired.append(len(one.engine.service.expire_due(now=later))),
            lambda: expired.append(len(two.engine.service.expire_due(now=later))),
        )
        assert sum(expired) == 3  # row locks: each request expired by one replica

        def sweep(replica: Live) -> Callable[[], None]:
            def run() -> None:
                for _ in range(50):
                    replica.engine.service.process_revocations(now=later, limit=1)
                    if table_count(engine, "revocations WHERE status = 'pending'") == 0:
                        return

            return run

        _together(sweep(one), sweep(two))
        assert issuing.logins() == []

        # Phase 2: the revocation right after the commit, on the replica that committed,
        # while the other replica sweeps.
        for replica in (one, two):
            replica.engine.service.parts.revoke_soon = replica.engine.service.revoking.revoke_soon
        more = [claimed(http_one, approved(http_one, read_body())) for _ in range(4)]
        assert len(issuing.logins()) == 4

        def complete(http: httpx.Client, batch: list[dict[str, Any]]) -> Callable[[], None]:
            def run() -> None:
                for answer in batch:
                    done = http.post(
                        f"/v1/requests/{answer['request_id']}/complete",
                        json={"outcome": "succeeded"},
                    )
                    assert done.status_code == 200, done.text

            return run

        now = datetime.now(UTC) + timedelta(seconds=1)
        _together(
            complete(http_one, more[:2]),
            complete(http_two, more[2:]),
            sweep_at(one, now),
            sweep_at(two, now),
        )
        eventually(issuing.logins, until=lambda roles: roles == [], message="logins left")

    every = answers + more
    handles = {a["secret"]["username"] for a in every}
    assert calls == dict.fromkeys(handles, 1), calls  # each role reached PostgreSQL once
    rows = audit_rows(engine)
    for answer in every:
        assert issuer_revoked(rows, answer["jti"]) == 1, answer["jti"]
    with engine.connect() as c:
        revocations = c.execute(text("SELECT jti, status, attempts FROM revocations")).all()
    assert sorted(revocations) == sorted((a["jti"], "done", 1) for a in every)


def sweep_at(replica: Live, now: datetime) -> Callable[[], None]:
    def run() -> None:
        for _ in range(20):
            replica.engine.service.process_revocations(now=now, limit=1)
            time.sleep(0.01)

    return run


# -- a lost race: the loser's login is revoked at once -----------------------------------------


def test_two_claims_at_once_leave_one_login_and_drop_the_losers(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        request_id = approved(http, read_body())
        built = api.engine.service.parts.issuers.get("orders-db")
        issue, both_minted = built.issue, threading.Barrier(2)

        def issue_then_wait(grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
            minted = issue(grant, request, expires_at)
            both_minted.wait(timeout=20)  # neither records before both have a login
            return minted

        built.issue = issue_then_wait  # type: ignore[method-assign]
        answers: list[httpx.Response] = []

        def claim() -> None:
            with api.client() as own:
                answers.append(own.post(f"/v1/requests/{request_id}/credential"))

        _together(claim, claim)
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        (winner,) = [a.json() for a in answers if a.status_code == 200]
        # The loser's login was revoked right after its claim failed; the winner's works.
        assert issuing.logins() == [winner["secret"]["username"]]
        with connect(winner["secret"]["dsn"]) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        with db.engine.connect() as c:
            queued = c.execute(
                text("SELECT jti, status, attempts FROM revocations WHERE jti LIKE 'unclaimed_%'")
            ).all()
        assert [(status, attempts) for _, status, attempts in queued] == [("done", 1)]
        assert issuer_revoked(audit_rows(db.engine, request_id), queued[0][0]) == 1
        done = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200
    assert issuing.logins() == []


def test_a_login_is_still_dropped_after_a_reload_removed_its_issuer(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        request_id = approved(http, read_body())
        answer = claimed(http, request_id)
        policy = api.engine.policy_path
        policy.write_text("version: 1\nrules: []\n")  # the issuer left the policy
        api.engine.service.policy.reload(policy)
        assert http.post("/v1/requests", json=read_body()).json()["status"] == "denied"
        done = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200
        assert issuing.logins() == []  # revoked with the settings it was issued under
        assert_login_fails(answer["secret"]["dsn"])
    assert issuer_revoked(audit_rows(db.engine, request_id), answer["jti"]) == 1


# -- 4. an issuer that cannot issue ----------------------------------------------------------


def test_an_issuer_that_fails_answers_502_and_the_request_stays_approved(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        request_id = approved(http, read_body())
        failures = [
            (None, issuing.env),  # unset: the message names the variable
            (issuing.target.dsn_as(issuing.target.powerless), "permission denied"),
        ]
        for dsn, named in failures:
            issuing.set_dsn(dsn)
            answer = http.post(f"/v1/requests/{request_id}/credential")
            assert answer.status_code == 502, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert problem["status"] == 502 and "claim again" in problem["detail"]
            assert named in problem["detail"], problem
            assert http.get(f"/v1/requests/{request_id}").json()["status"] == "approved"
            assert issuing.logins() == []
        failed = [
            data
            for kind, data in audit_rows(db.engine, request_id)
            if kind == "credential.issue_failed"
        ]
        assert [f["issuer"] for f in failed] == ["orders-db", "orders-db"]
        assert table_count(db.engine, "credentials") == 0

        issuing.set_dsn(issuing.target.admin_dsn)
        secret = claimed(http, request_id)["secret"]
        with connect(secret["dsn"]) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        assert http.get(f"/v1/requests/{request_id}").json()["status"] == "active"
        cancelled = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "aborted"})
        assert cancelled.status_code == 200
    assert issuing.logins() == []


def _alerts(engine: Any, channel: str) -> list[str]:
    """The kinds of the facts queued for ``channel`` (the security channel's alerts)."""
    with engine.connect() as conn:
        payloads = conn.execute(text("SELECT payload FROM outbox ORDER BY id")).scalars().all()
    found = []
    for payload in payloads:
        notice = json.loads(payload)
        if notice.get("channel") == channel and "fact" in notice:
            fact = notice["fact"]
            found.append(str((json.loads(fact) if isinstance(fact, str) else fact)["kind"]))
    return found


def test_a_revoke_the_server_refuses_is_retried_alerted_and_done_once_it_can(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        service = api.engine.service
        service.security_channel = "C0SECURITY"
        request_id = approved(http, read_body())
        answer = claimed(http, request_id)
        jti, role = answer["jti"], answer["secret"]["username"]
        conn = connect(answer["secret"]["dsn"])
        try:
            # The admin lost its rights: the request completes, the login cannot be dropped.
            issuing.set_dsn(issuing.target.dsn_as(issuing.target.powerless))
            done = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "succeeded"})
            assert done.status_code == 200 and done.json()["status"] == "completed"
            assert issuing.logins() == [role]
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)

            def revocation() -> tuple[Any, ...]:
                with db.engine.connect() as c:
                    row = c.execute(
                        text("SELECT status, attempts, last_error FROM revocations WHERE jti = :j"),
                        {"j": jti},
                    ).one()
                return tuple(row)

            status, attempts, error = revocation()
            assert (status, attempts) == ("pending", 1)
            assert "permission denied" in error and answer["secret"]["password"] not in error
            later = datetime.now(UTC)
            for _ in range(2):  # past each backoff: the second and third attempts fail too
                later += timedelta(minutes=10)
                assert service.process_revocations(now=later) == 0
            assert revocation()[:2] == ("pending", 3)
            assert _alerts(db.engine, "C0SECURITY") == ["issuer_revoke.failing"]

            issuing.set_dsn(issuing.target.admin_dsn)
            assert service.process_revocations(now=later + timedelta(minutes=10)) == 1
            assert_cut_off(conn)
        finally:
            conn.close()
        assert issuing.logins() == []
        assert revocation() == ("done", 4, None)
    rows = audit_rows(db.engine, request_id)
    failed = [data for kind, data in rows if kind == "credential.issuer_revoke_failed"]
    assert [f["attempts"] for f in failed] == [1, 2, 3]
    assert [data["attempts"] for kind, data in rows if kind == "credential.issuer_revoked"] == [4]
    assert _alerts(db.engine, "C0SECURITY") == [
        "issuer_revoke.failing",
        "issuer_revoke.recovered",
    ]


# -- 5. a grant filled from the request: no injection ------------------------------------------


def test_an_unsafe_parameter_in_a_grant_is_refused_at_submit(
    db: Database, tmp_path: Path, issuing: Issuing
) -> None:
    def by_table(table: str) -> dict[str, Any]:
        return read_body(action="db.table_read") | {"parameters": {"table": table}}

    with live(db, tmp_path, issuing.policy()) as api, api.client() as http:
        requests_before = table_count(db.engine, "requests")
        audit_before = table_count(db.engine, "audit_log")
        for unsafe in ("orders; drop table secrets", "orders_reader, pg_read_server_files", "O"):
            answer = http.post("/v1/requests", json=by_table(unsafe))
            assert answer.status_code == 422, answer.text
            assert "parameters.table" in answer.json()["detail"], answer.json()
        assert table_count(db.engine, "requests") == requests_before  # nothing written
        assert table_count(db.engine, "audit_log") == audit_before
        assert issuing.logins() == []

        request_id = approved(http, by_table("orders"))
        secret = claimed(http, request_id)["secret"]
        with connect(secret["dsn"]) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM secrets")
        done = http.post(f"/v1/requests/{request_id}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200
    assert issuing.logins() == []
    with psycopg.connect(issuing.target.admin_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM secrets").fetchone() == (1,)
