"""The ``postgres`` issuer: one real PostgreSQL login per approval (docs/issuers/postgres.md).

``issue`` creates a role with a random name and password, ``LOGIN``, ``VALID UNTIL`` the expiry,
a connection limit and no administrative attribute, then grants it membership of existing roles
and/or privileges on named tables and schemas, all in one transaction. ``revoke`` closes the
door first (``NOLOGIN``), then ends the role's sessions and drops it with what it owns.

Every statement is composed with ``psycopg.sql`` (identifiers quoted, values as literals). The
password never reaches the server in clear text: it is sent as a SCRAM-SHA-256 verifier, so
even a server that logs statements (or a failing one, which logs it) never records it. Errors
are reported with their SQLSTATE and primary message only: psycopg's own text may quote the
statement.
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, field_validator, model_validator

from core.issuers.base import (
    BuildContext,
    Grant,
    Issued,
    IssueRequest,
    IssuerSettings,
    IssuerUnavailable,
)

log = logging.getLogger(__name__)

IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
_IDENTIFIER = re.compile(IDENTIFIER)
_TABLE = re.compile(rf"(?:{IDENTIFIER}\.)?{IDENTIFIER}")
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_HOST = r"[A-Za-z0-9._:\-]{1,253}|/[A-Za-z0-9._/\-]{0,252}"
_SYSTEM_SCHEMAS = frozenset({"information_schema"})  # and every pg_* schema
_HANDLE_HEX = 24  # 96 random bits after the prefix
_TERMINATE_ROUNDS = 50  # x 0.1 s: how long revoke waits for the role's sessions to end

TablePrivilege = Literal[
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"
]
SchemaPrivilege = Literal["USAGE", "CREATE"]


class PostgresSettings(IssuerSettings):
    """The policy's ``issuers.NAME`` for ``type: postgres``."""

    admin_dsn_env: str = Field(pattern=rf"^{_ENV_NAME}$")
    host: str | None = Field(default=None, pattern=rf"^(?:{_HOST})$")
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, min_length=1, max_length=63, pattern=r"^[^\x00]+$")
    role_prefix: str = Field(default="stepup_", pattern=r"^[a-z_][a-z0-9_]{0,20}$")
    connection_limit: int = Field(default=5, ge=1, le=100)
    timeout_seconds: float = Field(default=10, gt=0, le=300)


def _upper(values: Any) -> Any:
    """Privileges are SQL keywords: ``select`` and ``SELECT`` mean the same."""
    if isinstance(values, list):
        return [v.upper() if isinstance(v, str) else v for v in values]
    return values


def _not_system(name: str, where: str) -> str:
    """Catalogs are off limits: ``pg_authid`` holds every password hash."""
    if name.startswith("pg_") or name in _SYSTEM_SCHEMAS:
        raise ValueError(f"{where} {name!r} is a system name (pg_* and information_schema)")
    return name


def _privileges(privileges: list[str], where: str) -> list[str]:
    if not privileges:
        raise ValueError(f"{where}: name at least one privilege")
    return list(dict.fromkeys(privileges))


class PostgresGrant(Grant):
    """A rule's ``grant:`` for a postgres issuer: existing roles to join, and/or privileges."""

    member_of: list[str] = Field(default_factory=list, max_length=20)
    tables: dict[str, list[TablePrivilege]] = Field(default_factory=dict, max_length=50)
    schemas: dict[str, list[SchemaPrivilege]] = Field(default_factory=dict, max_length=20)
    connection_limit: int | None = Field(default=None, ge=1, le=100)

    @field_validator("member_of")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        for role in roles:
            if not _IDENTIFIER.fullmatch(role):
                raise ValueError(f"role {role!r} must be a lowercase identifier ({IDENTIFIER})")
            _not_system(role, "role")
        return list(dict.fromkeys(roles))

    @field_validator("tables", mode="before")
    @classmethod
    def _tables_upper(cls, tables: Any) -> Any:
        return {k: _upper(v) for k, v in tables.items()} if isinstance(tables, dict) else tables

    @field_validator("schemas", mode="before")
    @classmethod
    def _schemas_upper(cls, schemas: Any) -> Any:
        return {k: _upper(v) for k, v in schemas.items()} if isinstance(schemas, dict) else schemas

    @field_validator("tables")
    @classmethod
    def _tables(cls, tables: dict[str, list[str]]) -> dict[str, list[str]]:
        for table, privileges in tables.items():
            if not _TABLE.fullmatch(table):
                raise ValueError(
                    f"table {table!r} must be 'table' or 'schema.table' ({IDENTIFIER})"
                )
            for part in table.split("."):
                _not_system(part, "table")
            tables[table] = _privileges(privileges, f"table {table}")
        return tables

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, schemas: dict[str, list[str]]) -> dict[str, list[str]]:
        for schema, privileges in schemas.items():
            if not _IDENTIFIER.fullmatch(schema):
                raise ValueError(f"schema {schema!r} must be a lowercase identifier")
            _not_system(schema, "schema")
            schemas[schema] = _privileges(privileges, f"schema {schema}")
        return schemas

    @model_validator(mode="after")
    def _something(self) -> PostgresGrant:
        if not self.member_of and not self.tables:
            raise ValueError("name roles to join (member_of) and/or tables")
        return self


class PostgresType:
    """The ``postgres`` issuer type."""

    type: ClassVar[str] = "postgres"
    settings_model: ClassVar[builtins.type[IssuerSettings]] = PostgresSettings
    grant_model: ClassVar[builtins.type[Grant]] = PostgresGrant
    safe_value: ClassVar[re.Pattern[str]] = _IDENTIFIER
    safe_value_text: ClassVar[str] = (
        "a lowercase PostgreSQL identifier (a letter or _, then up to 62 letters, digits or _)"
    )
    min_ttl: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def build(cls, name: str, settings: IssuerSettings, context: BuildContext) -> PostgresIssuer:
        assert isinstance(settings, PostgresSettings)
        return PostgresIssuer(name, settings, context.environ)

    @classmethod
    def describe(cls, name: str, settings: IssuerSettings, grant: Grant) -> str:
        assert isinstance(grant, PostgresGrant)
        parts = [f"member of {', '.join(grant.member_of)}"] if grant.member_of else []
        parts += [f"{', '.join(p)} on {table}" for table, p in grant.tables.items()]
        parts += [f"{', '.join(p)} on schema {schema}" for schema, p in grant.schemas.items()]
        return f"PostgreSQL login on {name}, " + "; ".join(parts)


class PostgresIssuer:
    """One configured PostgreSQL server (``issuers.orders-db``); a connection per operation."""

    type = "postgres"

    def __init__(self, name: str, settings: PostgresSettings, environ: Mapping[str, str]) -> None:
        self.name = name
        self.settings = settings
        self._environ = environ
        self._handle = re.compile(re.escape(settings.role_prefix) + f"[0-9a-f]{{{_HANDLE_HEX}}}")

    @property
    def min_ttl(self) -> timedelta:
        return timedelta(0)

    # -- issue ---------------------------------------------------------------------------

    def issue(self, grant: Grant, request: IssueRequest, expires_at: datetime) -> Issued:
        if not isinstance(grant, PostgresGrant):
            raise IssuerUnavailable(f"issuer {self.name!r} was given a grant of another type")
        if expires_at.tzinfo is None:
            raise IssuerUnavailable("expires_at must be timezone-aware")
        limit = grant.connection_limit or self.settings.connection_limit
        if limit > self.settings.connection_limit:
            raise IssuerUnavailable(
                f"grant.connection_limit {limit} exceeds the issuer's "
                f"connection_limit {self.settings.connection_limit}"
            )
        role = _new_role_name(self.settings.role_prefix)
        password = _new_password()
        secret = self._secret(role, password)  # before the role exists: nothing left to fail
        with self._connect("issue a login") as conn, self._failures("issue a login"):
            verifier = conn.pgconn.encrypt_password(
                password.encode(), role.encode(), b"scram-sha-256"
            ).decode()
            with conn.transaction():
                self._refuse_dangerous_roles(conn, grant.member_of)
                conn.execute(_create_role(role, verifier, expires_at, limit))
                conn.execute(_comment(role, request))
                for statement in _grants(role, grant):
                    conn.execute(statement)
        log.info("issuer %s: created role %s for request %s", self.name, role, request.request_id)
        return Issued(secret=secret, handle=role, expires_at=expires_at.astimezone(UTC))

    def _refuse_dangerous_roles(self, conn: psycopg.Connection[Any], roles: list[str]) -> None:
        """An approval must not mint an administrator: no role reachable through ``member_of``
        may be a superuser or hold an administrative attribute, a predefined ``pg_*`` role
        (server files, programs) or another login this issuer made."""
        if not roles:
            return
        found = {r for (r,) in conn.execute(_EXISTING, [roles]).fetchall()}
        missing = [r for r in roles if r not in found]
        if missing:
            raise IssuerUnavailable(f"member_of: role(s) {', '.join(missing)} do not exist")
        bad = conn.execute(_DANGEROUS, [roles, self.settings.role_prefix]).fetchall()
        if bad:
            names = ", ".join(sorted(r for (r,) in bad))
            raise IssuerUnavailable(
                f"member_of: refusing membership that reaches {names} (superuser, CREATEROLE, "
                "CREATEDB, REPLICATION, BYPASSRLS, a pg_* role or a login of this issuer)"
            )

    def _secret(self, role: str, password: str) -> dict[str, Any]:
        host, port, database = self._target()
        netloc = f"[{host}]" if ":" in host else quote(host, safe="")
        dsn = (
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
            f"@{netloc}:{port}/{quote(database, safe='')}"
        )
        return {
            "username": role,
            "password": password,
            "host": host,
            "port": port,
            "database": database,
            "dsn": dsn,
        }

    def _target(self) -> tuple[str, int, str]:
        """Where the agent connects: the settings, else the admin DSN's host, port, database."""
        admin = self._admin_params()
        host = self.settings.host or (admin.get("host") or "localhost").split(",")[0]
        port = self.settings.port or int((admin.get("port") or "5432").split(",")[0])
        database = self.settings.database or admin.get("dbname") or admin.get("user") or ""
        return host, port, database

    # -- revoke --------------------------------------------------------------------------

    def revoke(self, handle: str) -> None:
        if not self._handle.fullmatch(handle):
            raise IssuerUnavailable(
                f"refusing to drop role {handle[:80]!r}: not a login this issuer creates "
                f"({self.settings.role_prefix} followed by {_HANDLE_HEX} hex digits)"
            )
        with self._connect("revoke a login") as conn:
            try:
                # Replicas revoking the same role take turns (catalog updates of one role
                # collide: "tuple concurrently updated"); closing the connection unlocks.
                conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [handle])
                dropped = self._drop(conn, handle)
            except psycopg.Error as exc:
                if not _exists(conn, handle):  # dropped meanwhile, by someone else
                    return
                raise IssuerUnavailable(_safe_message(f"revoke {handle}", exc)) from None
        if dropped:
            log.info("issuer %s: dropped role %s", self.name, handle)

    def _drop(self, conn: psycopg.Connection[Any], role: str) -> bool:
        """NOLOGIN first, so no new session can start while the open ones are ended."""
        row = conn.execute(
            "SELECT oid, rolsuper FROM pg_roles WHERE rolname = %s", [role]
        ).fetchone()
        if row is None:
            return False
        oid, is_superuser = row
        if is_superuser:
            raise IssuerUnavailable(f"refusing to drop role {role}: it is a superuser")
        ident = sql.Identifier(role)
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        self._adopt(conn, role)
        _terminate(conn, oid)
        with conn.transaction():
            # What the login created is dropped with it, never handed to the admin: a
            # SECURITY DEFINER function it left behind would otherwise run as the admin.
            # Something else depending on it makes DROP OWNED fail: retried and alerted.
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
        _terminate(conn, oid)  # a session that slipped in between: its role is gone now
        return True

    @staticmethod
    def _adopt(conn: psycopg.Connection[Any], role: str) -> None:
        """A non-superuser admin needs the role's privileges to end its sessions and drop what
        it owns (DROP OWNED); CREATEROLE lets it grant them to itself."""
        (has,) = conn.execute("SELECT pg_has_role(%s, 'USAGE')", [role]).fetchone() or (True,)
        if not has:
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))

    def sweep_expired(self, now: datetime) -> list[str]:
        """Drop this issuer's logins whose ``VALID UNTIL`` has passed: orphans of a crash between
        the role's creation and the request's commit, which no schedule knows. Returns the
        names dropped; a role that could not be dropped is logged and left for the next sweep."""
        with self._connect("list expired logins") as conn, self._failures("list expired logins"):
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)"
                " AND rolvaliduntil < %s ORDER BY rolname",
                [self.settings.role_prefix, now],
            ).fetchall()
        dropped: list[str] = []
        for (role,) in rows:
            if not self._handle.fullmatch(role):
                continue
            try:
                self.revoke(role)
            except IssuerUnavailable as exc:
                log.warning("issuer %s: expired role %s not dropped: %s", self.name, role, exc)
                continue
            dropped.append(role)
        return dropped

    # -- check ---------------------------------------------------------------------------

    def check(self) -> str:
        with self._connect("check") as conn, self._failures("check"):
            row = conn.execute(
                "SELECT current_user, current_database(), rolsuper, rolcreaterole"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            where = f"{conn.info.host}:{conn.info.port}"
        if row is None:  # pragma: no cover - the current user always has a pg_roles row
            raise IssuerUnavailable("the admin role is not in pg_roles")
        user, database, is_superuser, may_create = row
        if not (is_superuser or may_create):
            raise IssuerUnavailable(
                f"connected to {database} at {where} as {user}, but {user} may not create "
                "roles (needs CREATEROLE)"
            )
        how = "superuser" if is_superuser else "CREATEROLE"
        return f"connected to {database} at {where} as {user}; may create roles ({how})"

    # -- connections ---------------------------------------------------------------------

    def _admin_dsn(self) -> str:
        variable = self.settings.admin_dsn_env
        dsn = self._environ.get(variable)
        if not dsn:
            raise IssuerUnavailable(
                f"issuer {self.name!r}: environment variable {variable} (the admin DSN) is not set"
            )
        return dsn

    def _admin_params(self) -> dict[str, Any]:
        try:
            return conninfo_to_dict(self._admin_dsn())
        except psycopg.Error:  # its message quotes the DSN, password included
            raise IssuerUnavailable(
                f"issuer {self.name!r}: {self.settings.admin_dsn_env} is not a valid libpq "
                "connection string or postgresql:// URL"
            ) from None

    @contextmanager
    def _connect(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit admin connection to the agent's database, with both timeouts set."""
        params = self._admin_params()
        if self.settings.database:
            params["dbname"] = self.settings.database
        timeout = self.settings.timeout_seconds
        params["connect_timeout"] = max(1, round(timeout))
        try:
            conn = psycopg.connect(**params, autocommit=True)
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", [f"{round(timeout * 1000)}ms"]
            )
        except psycopg.Error as exc:
            raise IssuerUnavailable(
                _safe_message(f"{doing}: cannot connect", exc, params.get("password"))
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise IssuerUnavailable(_safe_message(doing, exc)) from None


_EXISTING = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"
_DANGEROUS = """
WITH RECURSIVE reach(oid) AS (
    SELECT oid FROM pg_roles WHERE rolname = ANY(%s)
    UNION
    SELECT m.roleid FROM pg_auth_members m JOIN reach ON m.member = reach.oid
)
SELECT r.rolname FROM reach JOIN pg_roles r ON r.oid = reach.oid
WHERE r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
   OR starts_with(r.rolname, 'pg_') OR starts_with(r.rolname, %s)
"""


def _new_role_name(prefix: str) -> str:
    return prefix + secrets.token_hex(_HANDLE_HEX // 2)


def _new_password() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, 256 bits


def _create_role(role: str, verifier: str, expires_at: datetime, limit: int) -> sql.Composed:
    """INHERIT, so the privileges of the roles joined apply without SET ROLE."""
    return sql.SQL(
        "CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        " NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {}"
    ).format(
        sql.Identifier(role),
        sql.Literal(limit),
        sql.Literal(verifier),
        sql.Literal(expires_at.astimezone(UTC).isoformat()),
    )


def _comment(role: str, request: IssueRequest) -> sql.Composed:
    """Who it is for, for whoever finds the role in the server's catalog."""
    text = f"stepup request {request.request_id} for agent {request.agent}"
    return sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(text))


def _grants(role: str, grant: PostgresGrant) -> list[sql.Composed]:
    grantee = sql.Identifier(role)
    statements = [
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(member), grantee)
        for member in grant.member_of
    ]
    for schema, usage in grant.schemas.items():
        statements.append(
            sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in usage),
                sql.Identifier(schema),
                grantee,
            )
        )
    for table, privileges in grant.tables.items():
        statements.append(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                sql.Identifier(*table.split(".")),
                grantee,
            )
        )
    return statements


def _exists(conn: psycopg.Connection[Any], role: str) -> bool:
    try:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None
        )
    except psycopg.Error:
        return True  # cannot tell: report the original failure


def _terminate(conn: psycopg.Connection[Any], oid: int) -> None:
    """End every session of the role (by oid: still found once the role is dropped), then
    wait, boundedly, until they are gone, so revoke returns with the door shut."""
    for _ in range(_TERMINATE_ROUNDS):
        (left,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s AND pid <> pg_backend_pid()",
            [oid],
        ).fetchone() or (0,)
        if left == 0:
            return
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usesysid = %s AND pid <> pg_backend_pid()",
            [oid],
        )
        time.sleep(0.1)
    raise IssuerUnavailable(f"sessions of role oid {oid} did not end")


def _safe_message(doing: str, exc: psycopg.Error, *secrets_: str | None) -> str:
    """SQLSTATE and the server's primary message only: psycopg's full text may quote the
    statement (``LINE 1: CREATE ROLE … PASSWORD …``); a connection error's first line, with
    any known secret masked, when there is no server message."""
    diag = exc.diag
    lines = str(exc).splitlines()
    text = diag.message_primary or (lines[0] if lines else exc.__class__.__name__)
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    state = f" [{diag.sqlstate}]" if diag.sqlstate else ""
    return f"{doing} failed{state}: {text}"
