"""The postgres issuer against the real PostgreSQL: logins that open exactly the granted door
and close for good on revoke.

The module gets a database of its own and role names unique to the run (parallel runs share the
cluster's roles); the database and every role made here are dropped at the end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from core.issuers import postgres as pg_module
from core.issuers.base import BuildContext, IssueRequest, IssuerUnavailable
from core.issuers.catalog import IssuerConfig, issuer_type
from core.issuers.postgres import PostgresGrant, PostgresIssuer, PostgresSettings, PostgresType
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _postgres_unavailable

pytestmark = pytest.mark.postgres

ENV = "TEST_ORDERS_DB_ADMIN_DSN"
REQUEST = IssueRequest(
    request_id="req_01pgissuer",
    agent="agent-7",
    action="db.query",
    target="orders-db",
    environment="production",
    args_digest="sha256:" + "0" * 64,
)


@dataclass(frozen=True)
class Cluster:
    """The run's database and names: ``tag`` starts every role made here."""

    server_url: str  # libpq URL of the admin on the server's default database
    db_url: str  # the same admin on this module's database
    database: str
    tag: str

    @property
    def prefix(self) -> str:
        return f"{self.tag}_l_"

    @property
    def reader(self) -> str:
        return f"{self.tag}_orders_reader"

    def url_as(self, user: str) -> str:
        return make_url(self.db_url).set(username=user, password=None).render_as_string()


def _setup(conn: psycopg.Connection[Any], tag: str, prefix: str) -> None:
    def role(suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{tag}_{suffix}")

    statements: list[sql.SQL | sql.Composed] = [
        sql.SQL("CREATE TABLE orders (id int PRIMARY KEY, item text)"),
        sql.SQL("INSERT INTO orders VALUES (1, 'book')"),
        sql.SQL("CREATE TABLE secrets (id int, value text)"),
        sql.SQL("INSERT INTO secrets VALUES (1, 'launch codes')"),
        sql.SQL("CREATE SCHEMA reports"),
        sql.SQL("CREATE TABLE reports.daily (day int)"),
        sql.SQL("INSERT INTO reports.daily VALUES (42)"),
        sql.SQL("CREATE SCHEMA scratch"),
        sql.SQL("CREATE ROLE {} NOLOGIN").format(role("orders_reader")),
        sql.SQL("GRANT SELECT ON orders TO {}").format(role("orders_reader")),
        sql.SQL("CREATE ROLE {} NOLOGIN SUPERUSER").format(role("super")),
        sql.SQL("CREATE ROLE {} NOLOGIN").format(role("via_super")),
        sql.SQL("GRANT {} TO {}").format(role("super"), role("via_super")),
        sql.SQL("CREATE ROLE {} NOLOGIN").format(role("files")),
        sql.SQL("GRANT pg_read_server_files TO {}").format(role("files")),
        sql.SQL("CREATE ROLE {} NOLOGIN CREATEDB").format(role("maker")),
        sql.SQL("CREATE ROLE {} LOGIN").format(role("nocreate")),
        sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(role("creator")),
        sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(role("orders_reader"), role("creator")),
        sql.SQL("CREATE ROLE {} NOLOGIN SUPERUSER").format(sql.Identifier(prefix + "0" * 24)),
    ]
    for statement in statements:
        conn.execute(statement)


def _drop_everything(server_url: str, database: str, tag: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [tag]
        ).fetchall()
        for (name,) in roles:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = _postgres_unavailable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (STEPUP_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    base = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    tag = f"t{secrets.token_hex(5)}"
    database = f"stepup_pgissuer_{tag}"
    server_url = base.render_as_string(hide_password=False)
    db_url = base.set(database=database).render_as_string(hide_password=False)
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        with psycopg.connect(db_url, autocommit=True) as conn:
            _setup(conn, tag, f"{tag}_l_")
        yield Cluster(server_url, db_url, database, tag)
    finally:
        _drop_everything(server_url, database, tag)


def make_issuer(cluster: Cluster, dsn: str | None = None, **settings: Any) -> PostgresIssuer:
    parsed = PostgresSettings(admin_dsn_env=ENV, role_prefix=cluster.prefix, **settings)
    environ = {ENV: cluster.db_url if dsn is None else dsn}
    return PostgresType.build("orders-db", parsed, BuildContext(environ=environ))


@pytest.fixture
def issuer(cluster: Cluster) -> PostgresIssuer:
    return make_issuer(cluster)


def soon(minutes: int = 10) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes)


def login(secret: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(secret["dsn"], connect_timeout=5, autocommit=True)


def role_row(cluster: Cluster, role: str) -> dict[str, Any] | None:
    with psycopg.connect(cluster.db_url) as conn:
        cur = conn.execute(
            "SELECT a.*, shobj_description(a.oid, 'pg_authid') AS comment"
            " FROM pg_authid a WHERE rolname = %s",
            [role],
        )
        row = cur.fetchone()
        if row is None:
            return None
        names = [c.name for c in cur.description or []]
        return dict(zip(names, row, strict=True))


def prefixed_roles(cluster: Cluster) -> set[str]:
    with psycopg.connect(cluster.server_url) as conn:
        rows = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [cluster.prefix]
        ).fetchall()
    return {name for (name,) in rows} - {cluster.prefix + "0" * 24}


def scram_matches(verifier: str, password: str) -> bool:
    """RFC 5802/7677: the stored key of ``password`` under the verifier's salt and count."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    expected = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    return method == "SCRAM-SHA-256" and hmac.compare_digest(expected, stored_key)


def passwords_checked(cluster: Cluster) -> bool:
    """Whether the server asks this client for a password (not under ``trust``)."""
    wrong = make_url(cluster.db_url).set(username=f"{cluster.tag}_nocreate", password="wrong")
    try:
        psycopg.connect(wrong.render_as_string(hide_password=False), connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False


# -- the door: what the login can and cannot do ------------------------------------------


def test_member_of_reads_the_granted_table_and_nothing_else(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    try:
        with login(dict(issued.secret)) as agent:
            assert agent.execute("SELECT item FROM orders").fetchall() == [("book",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agent.execute("INSERT INTO orders VALUES (2, 'pen')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agent.execute("SELECT value FROM secrets")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agent.execute("CREATE ROLE sneaky")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # cannot outlive revoke
                agent.execute("ALTER ROLE CURRENT_USER VALID UNTIL 'infinity'")
    finally:
        issuer.revoke(issued.handle)


def test_table_and_schema_privileges_without_a_group_role(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    grant = PostgresGrant(
        tables={"orders": ["select"], "reports.daily": ["SELECT"]}, schemas={"reports": ["USAGE"]}
    )
    issued = issuer.issue(grant, REQUEST, soon())
    with login(dict(issued.secret)) as agent:
        assert agent.execute("SELECT id FROM orders").fetchall() == [(1,)]
        assert agent.execute("SELECT day FROM reports.daily").fetchall() == [(42,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("UPDATE orders SET item = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("SELECT * FROM secrets")
    issuer.revoke(issued.handle)  # DROP OWNED removes the privileges, else DROP ROLE fails
    assert role_row(cluster, issued.handle) is None


def test_the_role_holds_no_power_and_a_scram_verifier_of_its_password(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    expires = soon(7)
    grant = PostgresGrant(member_of=[cluster.reader], connection_limit=2)
    issued = issuer.issue(grant, REQUEST, expires)
    try:
        row = role_row(cluster, issued.handle)
        assert row is not None
        assert row["rolcanlogin"] and row["rolinherit"]
        assert not any(
            row[a]
            for a in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
        )
        assert row["rolconnlimit"] == 2
        assert row["rolvaliduntil"] == expires == issued.expires_at
        assert row["comment"] == "stepup request req_01pgissuer for agent agent-7"
        password = issued.secret["password"]
        assert len(password) >= 32 and password not in row["rolpassword"]
        assert scram_matches(row["rolpassword"], password)
        assert not scram_matches(row["rolpassword"], password + "x")
    finally:
        issuer.revoke(issued.handle)


def test_connection_limit_defaults_to_the_settings_and_cannot_exceed_them(
    cluster: Cluster,
) -> None:
    issuer = make_issuer(cluster, connection_limit=3)
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    try:
        row = role_row(cluster, issued.handle)
        assert row is not None and row["rolconnlimit"] == 3
    finally:
        issuer.revoke(issued.handle)
    before = prefixed_roles(cluster)
    too_many = PostgresGrant(member_of=[cluster.reader], connection_limit=4)
    with pytest.raises(IssuerUnavailable, match="connection_limit 4 exceeds"):
        issuer.issue(too_many, REQUEST, soon())
    assert prefixed_roles(cluster) == before


def test_the_secret_has_the_documented_fields_and_a_dsn_that_says_the_same(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    try:
        secret = dict(issued.secret)
        assert set(secret) == {"username", "password", "host", "port", "database", "dsn"}
        assert secret["username"] == issued.handle and issued.handle.startswith(cluster.prefix)
        assert (secret["host"], secret["port"], secret["database"]) == (
            "127.0.0.1",
            5432,
            cluster.database,
        )
        assert conninfo_to_dict(secret["dsn"]) == {
            "user": secret["username"],
            "password": secret["password"],
            "host": "127.0.0.1",
            "port": "5432",
            "dbname": cluster.database,
        }
        assert "password" not in repr(issued)
    finally:
        issuer.revoke(issued.handle)


def test_host_port_and_database_told_to_the_agent_come_from_the_settings(
    cluster: Cluster,
) -> None:
    issuer = make_issuer(cluster, host="db.internal.example", port=6432)
    secret = issuer._secret("stepup_abc", "p@ss/w:rd")
    assert secret["dsn"] == (
        f"postgresql://stepup_abc:p%40ss%2Fw%3Ard@db.internal.example:6432/{cluster.database}"
    )
    assert conninfo_to_dict(secret["dsn"])["password"] == "p@ss/w:rd"


# -- revoke ------------------------------------------------------------------------------


def test_revoke_ends_the_open_session_and_a_new_login_fails(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    agent = login(dict(issued.secret))
    try:
        assert agent.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        issuer.revoke(issued.handle)
        with pytest.raises(psycopg.OperationalError):
            agent.execute("SELECT count(*) FROM orders")
    finally:
        agent.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        login(dict(issued.secret))
    assert role_row(cluster, issued.handle) is None


def test_revoke_shuts_the_door_before_ending_sessions(
    cluster: Cluster, issuer: PostgresIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login racing the revoke must not slip in after its sessions were ended: when the
    sessions are terminated, the role already refuses new logins."""
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    racing: list[str] = []
    terminate = pg_module._terminate

    def racing_login_then_terminate(conn: psycopg.Connection[Any], oid: int) -> None:
        try:
            login(dict(issued.secret)).close()
            racing.append("logged in")
        except psycopg.OperationalError as exc:
            racing.append(str(exc))
        terminate(conn, oid)

    monkeypatch.setattr(pg_module, "_terminate", racing_login_then_terminate)
    issuer.revoke(issued.handle)
    assert racing and "is not permitted to log in" in racing[0]


def test_revoke_is_idempotent(cluster: Cluster, issuer: PostgresIssuer) -> None:
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    issuer.revoke(issued.handle)
    issuer.revoke(issued.handle)
    issuer.revoke(cluster.prefix + "f" * 24)  # never existed
    assert role_row(cluster, issued.handle) is None


def test_two_replicas_revoking_at_once_both_succeed(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    errors: list[BaseException] = []
    replicas = [make_issuer(cluster) for _ in range(4)]
    start = threading.Barrier(len(replicas), timeout=30)

    def replica(issuer: PostgresIssuer) -> None:
        try:
            start.wait()
            issuer.revoke(issued.handle)
        except BaseException as exc:  # pragma: no cover - reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and role_row(cluster, issued.handle) is None


@pytest.mark.parametrize(
    "handle", ["postgres", "{tag}_orders_reader", "{prefix}admin", "{prefix}" + "0" * 24]
)
def test_revoke_refuses_a_role_it_did_not_create(
    cluster: Cluster, issuer: PostgresIssuer, handle: str
) -> None:
    """A tampered handle in the database must not drop ``postgres`` or a prefixed superuser."""
    handle = handle.format(tag=cluster.tag, prefix=cluster.prefix)
    existed = role_row(cluster, handle)
    with pytest.raises(IssuerUnavailable, match="refusing to drop"):
        issuer.revoke(handle)
    assert role_row(cluster, handle) == existed


def test_revoke_drops_what_the_login_created_and_hands_nothing_to_the_admin(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    """A SECURITY DEFINER function the agent leaves behind must not end up owned by the admin
    (it would then run as the admin for anyone who may call it)."""
    grant = PostgresGrant(tables={"orders": ["SELECT"]}, schemas={"scratch": ["USAGE", "CREATE"]})
    issued = issuer.issue(grant, REQUEST, soon())
    with login(dict(issued.secret)) as agent:
        agent.execute("CREATE TABLE scratch.notes (n int)")
        agent.execute(
            "CREATE FUNCTION scratch.backdoor() RETURNS text LANGUAGE sql SECURITY DEFINER"
            " AS 'SELECT current_user::text'"
        )
    issuer.revoke(issued.handle)
    with psycopg.connect(cluster.db_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'scratch' AND c.relname = 'notes'"
        ).fetchone()
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'scratch' AND p.proname = 'backdoor'"
        ).fetchone()
    assert left == (0,) and functions == (0,)
    assert role_row(cluster, issued.handle) is None


def test_a_createrole_admin_that_is_not_superuser_can_issue_and_revoke(cluster: Cluster) -> None:
    issuer = make_issuer(cluster, dsn=cluster.url_as(f"{cluster.tag}_creator"))
    assert issuer.check().endswith("may create roles (CREATEROLE)")
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    agent = login(dict(issued.secret))
    try:
        assert agent.execute("SELECT item FROM orders").fetchone() == ("book",)
        issuer.revoke(issued.handle)
        with pytest.raises(psycopg.OperationalError):
            agent.execute("SELECT 1")
    finally:
        agent.close()
    assert role_row(cluster, issued.handle) is None


# -- expiry ------------------------------------------------------------------------------


def test_sweep_drops_expired_logins_only(cluster: Cluster, issuer: PostgresIssuer) -> None:
    now = datetime.now(UTC)
    grant = PostgresGrant(member_of=[cluster.reader])
    expiring = issuer.issue(grant, REQUEST, now + timedelta(minutes=1))
    lasting = issuer.issue(grant, REQUEST, now + timedelta(hours=1))
    try:
        assert issuer.sweep_expired(now) == []
        assert issuer.sweep_expired(now + timedelta(minutes=10)) == [expiring.handle]
        assert role_row(cluster, expiring.handle) is None
        with pytest.raises(psycopg.OperationalError):
            login(dict(expiring.secret))
        with login(dict(lasting.secret)) as agent:
            assert agent.execute("SELECT 1").fetchone() == (1,)
    finally:
        issuer.revoke(lasting.handle)
        issuer.revoke(expiring.handle)


def test_valid_until_is_only_a_backstop_so_the_sweep_closes_the_door(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    """The server checks VALID UNTIL only for password authentication: under trust (this test
    cluster) an expired role still logs in, which is why revoke and the sweep exist."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, past)
    try:
        if not passwords_checked(cluster):
            with login(dict(issued.secret)) as agent:  # VALID UNTIL is not enforced
                assert agent.execute("SELECT 1").fetchone() == (1,)
        else:
            with pytest.raises(psycopg.OperationalError):
                login(dict(issued.secret))
        assert issuer.sweep_expired(datetime.now(UTC)) == [issued.handle]
        with pytest.raises(psycopg.OperationalError):
            login(dict(issued.secret))
    finally:
        issuer.revoke(issued.handle)


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role",
    ["postgres", "{tag}_super", "{tag}_via_super", "{tag}_files", "{tag}_maker", "{tag}_creator"],
)
def test_membership_that_reaches_an_administrator_is_refused(
    cluster: Cluster, issuer: PostgresIssuer, role: str
) -> None:
    """An approval must not mint an admin: not by a superuser (directly or through a group),
    a pg_* predefined role, CREATEDB or CREATEROLE."""
    before = prefixed_roles(cluster)
    grant = PostgresGrant(member_of=[cluster.reader, role.format(tag=cluster.tag)])
    with pytest.raises(IssuerUnavailable, match="refusing membership"):
        issuer.issue(grant, REQUEST, soon())
    assert prefixed_roles(cluster) == before


def test_membership_of_another_issued_login_is_refused(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    first = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    try:
        with pytest.raises(IssuerUnavailable, match="refusing membership"):
            issuer.issue(PostgresGrant(member_of=[first.handle]), REQUEST, soon())
    finally:
        issuer.revoke(first.handle)


def test_a_missing_role_or_table_is_refused_and_nothing_is_left_behind(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    before = prefixed_roles(cluster)
    with pytest.raises(IssuerUnavailable, match="no_such_role do not exist"):
        issuer.issue(PostgresGrant(member_of=["no_such_role"]), REQUEST, soon())
    with pytest.raises(IssuerUnavailable, match=r"\[42P01\].*no_such_table"):
        issuer.issue(PostgresGrant(tables={"no_such_table": ["SELECT"]}), REQUEST, soon())
    assert prefixed_roles(cluster) == before  # the CREATE ROLE was rolled back with the grant


INJECTIONS = ['x"; drop role postgres; --', "orders_reader'--", "Orders", "a b", "a.b", "*", ""]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_looking_values_are_refused_by_the_grant_and_the_safe_pattern(
    value: str,
) -> None:
    assert not PostgresType.safe_value.fullmatch(value)
    with pytest.raises(ValidationError):
        PostgresGrant(member_of=[value])
    with pytest.raises(ValidationError):
        PostgresGrant(member_of=["r"], schemas={value: ["USAGE"]})
    if value != "a.b":
        with pytest.raises(ValidationError):
            PostgresGrant(tables={value: ["SELECT"]})


@pytest.mark.parametrize(
    "grant",
    [
        {"member_of": ["pg_read_server_files"]},
        {"member_of": ["pg_execute_server_program"]},
        {"tables": {"pg_authid": ["SELECT"]}},
        {"tables": {"pg_catalog.pg_authid": ["SELECT"]}},
        {"tables": {"information_schema.tables": ["SELECT"]}},
        {"member_of": ["r"], "schemas": {"pg_catalog": ["USAGE"]}},
        {"tables": {"orders": ["ALL"]}},
        {"tables": {"orders": []}},
        {"member_of": ["r"], "schemas": {"s": ["SELECT"]}},
        {"schemas": {"s": ["USAGE"]}},
        {},
        {"member_of": ["r"], "superuser": True},
        {"member_of": ["r"], "connection_limit": 0},
    ],
)
def test_grants_outside_the_shape_are_refused(grant: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PostgresGrant.model_validate(grant)


@pytest.mark.parametrize(
    "settings",
    [
        {"admin_dsn_env": "postgresql://postgres:pw@db/x"},  # a DSN inline, not a variable name
        {"admin_dsn_env": "DSN", "role_prefix": "Stepup"},
        {"admin_dsn_env": "DSN", "role_prefix": "a" * 22},
        {"admin_dsn_env": "DSN", "connection_limit": 101},
        {"admin_dsn_env": "DSN", "host": "db host"},
        {"admin_dsn_env": "DSN", "password": "inline"},
    ],
)
def test_settings_outside_the_shape_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PostgresSettings.model_validate(settings)


# -- check -------------------------------------------------------------------------------


def test_check_reports_the_connection_and_the_permission(
    cluster: Cluster, issuer: PostgresIssuer
) -> None:
    assert issuer.check() == (
        f"connected to {cluster.database} at 127.0.0.1:5432 as postgres; "
        "may create roles (superuser)"
    )


def test_check_fails_for_an_admin_that_may_not_create_roles(cluster: Cluster) -> None:
    issuer = make_issuer(cluster, dsn=cluster.url_as(f"{cluster.tag}_nocreate"))
    with pytest.raises(IssuerUnavailable, match="may not create roles"):
        issuer.check()


def test_check_names_a_missing_variable() -> None:
    settings = PostgresSettings(admin_dsn_env="NOT_SET_ANYWHERE")
    issuer = PostgresType.build("orders-db", settings, BuildContext(environ={}))
    with pytest.raises(IssuerUnavailable, match=r"NOT_SET_ANYWHERE .* is not set"):
        issuer.check()
    with pytest.raises(IssuerUnavailable, match="NOT_SET_ANYWHERE"):
        issuer.issue(PostgresGrant(member_of=["r"]), REQUEST, soon())


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 password=hunter2-admin-secret oops",  # not libpq syntax
        "postgresql://postgres:hunter2-admin-secret@127.0.0.1:1/x",  # nothing listens
        "postgresql://nobody_here:hunter2-admin-secret@127.0.0.1:5432/postgres",
    ],
)
def test_admin_dsn_failures_never_show_its_password(
    cluster: Cluster, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = make_issuer(cluster, dsn=dsn, timeout_seconds=3)
    with pytest.raises(IssuerUnavailable) as caught:
        issuer.check()
    shown = "".join(traceback.format_exception(caught.value))
    assert "hunter2-admin-secret" not in shown and "hunter2" not in caplog.text
    assert ENV in str(caught.value) or "cannot connect" in str(caught.value)


# -- secrets stay out of logs and errors -------------------------------------------------


def test_the_password_reaches_no_log_and_no_error(
    cluster: Cluster,
    issuer: PostgresIssuer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    issuer.revoke(issued.handle)
    assert issued.handle in caplog.text  # the handle is logged ...
    assert issued.secret["password"] not in caplog.text  # ... the password never
    # A failing CREATE ROLE (the name is taken) must not echo the statement or the password.
    password = "Sup3r-Secret-Password-" + secrets.token_hex(8)
    taken = issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    monkeypatch.setattr(pg_module, "_new_password", lambda: password)
    monkeypatch.setattr(pg_module, "_new_role_name", lambda prefix: taken.handle)
    try:
        with pytest.raises(IssuerUnavailable, match=r"\[42710\]") as caught:
            issuer.issue(PostgresGrant(member_of=[cluster.reader]), REQUEST, soon())
    finally:
        issuer.revoke(taken.handle)
    shown = "".join(traceback.format_exception(caught.value))
    assert password not in shown and "SCRAM-SHA-256" not in shown
    assert password not in caplog.text and "SCRAM-SHA-256" not in caplog.text


# -- the type ----------------------------------------------------------------------------


def test_describe_says_what_will_be_issued() -> None:
    settings = PostgresSettings(admin_dsn_env="DSN")
    assert (
        PostgresType.describe("orders-db", settings, PostgresGrant(member_of=["a", "b"]))
        == "PostgreSQL login on orders-db, member of a, b"
    )
    grant = PostgresGrant(
        member_of=["a"],
        tables={"orders.items": ["SELECT", "INSERT"]},
        schemas={"orders": ["USAGE"]},
    )
    assert PostgresType.describe("orders-db", settings, grant) == (
        "PostgreSQL login on orders-db, member of a; SELECT, INSERT on orders.items; "
        "USAGE on schema orders"
    )


def test_the_catalog_finds_the_type_and_parses_the_policy_entry() -> None:
    assert issuer_type("postgres") is PostgresType
    config = IssuerConfig.parse("orders-db", {"type": "postgres", "admin_dsn_env": "DSN"})
    assert config.settings == PostgresSettings(admin_dsn_env="DSN")
    config.check_template({"member_of": ["{parameters.role}"]})
    assert PostgresType.min_ttl == timedelta(0)


def test_error_messages_keep_the_server_message_but_never_the_statement(cluster: Cluster) -> None:
    """psycopg's own text quotes the statement (``LINE 1: … PASSWORD '…'``)."""
    with (
        psycopg.connect(cluster.db_url, autocommit=True) as conn,
        pytest.raises(psycopg.Error) as caught,
    ):
        conn.execute("CREATE ROLE never_made PASSWORD 'plain-secret-1234' BOGUS")
    assert "plain-secret-1234" in str(caught.value)
    message = pg_module._safe_message("issue a login", caught.value)
    assert message == 'issue a login failed [42601]: unrecognized role option "bogus"'
