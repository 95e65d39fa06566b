"""``stepup db upgrade`` and ``stepup keys rotate|list``: the schema and the signing keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import typer

from bot.cli.common import JsonFlag, Table, fail, settings_or_exit

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.keys import KeyRing

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically by `stepup serve`)."""
    from bot.wiring import open_database
    from core.storage.migrate import current_revision

    settings = settings_or_exit()
    db = open_database(settings)
    typer.echo(f"database at revision {current_revision(db.engine)}")
    db.dispose()


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key active; running replicas that share STEPUP_KEYS_DIR switch to it
    within seconds, and the old key stays in the JWKS until its credentials have expired."""
    from bot.clock import utc_now
    from core.errors import StepupError
    from core.keyretention import CLOCK_SKEW
    from core.keys import CHECK_INTERVAL_SECONDS

    settings = settings_or_exit()
    ring = _keyring_or_exit(settings)
    lifetime = _credential_lifetime(settings)
    ring.set_credential_lifetime(lambda: lifetime)
    old = ring.active_kid
    now = utc_now()
    try:
        new = ring.rotate(now)
    except StepupError as exc:
        raise fail(f"the keys were not rotated: {exc.detail}") from None
    until = next((s.jwks_until for s in ring.key_statuses() if s.kid == old), None)
    typer.echo(f"active key {new} (was {old})")
    typer.echo(
        f"{old} stays in the JWKS until {_iso(until)} (credentials live up to "
        f"{_duration(lifetime)}, plus {_duration(CLOCK_SKEW)} of clock skew); its public key "
        "stays on disk for audit verification"
    )
    typer.echo(
        f"running replicas that share {settings.keys_dir} sign with the new key within "
        f"{CHECK_INTERVAL_SECONDS:g} seconds, no restart needed"
    )
    _audit_rotation(settings, new, old, until, now)


def _audit_rotation(
    settings: Settings, new: str, old: str, until: datetime | None, now: datetime
) -> None:
    """The rotation in the audit log. The key has changed by now whatever happens here, so a
    database that cannot take the entry is an error that says exactly that."""
    from bot.wiring import open_database
    from core.audit.events import AuditLog
    from core.storage.audit_store import SqlAuditAppender

    try:
        db = open_database(settings)
        try:
            with db.write() as session:
                AuditLog(SqlAuditAppender(session)).signing_key_rotated(new, old, until, "cli", now)
        finally:
            db.dispose()
    except Exception as exc:  # the database's own error type varies with the driver
        raise fail(
            f"the key WAS rotated, but the rotation is not in the audit log ({type(exc).__name__});"
            " record it by hand"
        ) from None
    typer.echo("recorded in the audit log")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """Each key: kid, created, active or retired, and when a retired key leaves the JWKS."""
    from bot.clock import utc_now

    settings = settings_or_exit()
    if not (settings.keys_dir / "active.key").is_file():
        raise fail(
            f"no signing keys at {settings.keys_dir}: point STEPUP_KEYS_DIR at the service's"
        )
    ring = _keyring_or_exit(settings)
    lifetime = _credential_lifetime(settings)
    ring.set_credential_lifetime(lambda: lifetime)
    now = utc_now()
    table = Table(("KID", "CREATED", "STATE", "JWKS"))
    for status in ring.key_statuses():
        created = _iso(status.created_at)
        record = {
            "kid": status.kid,
            "created": None if status.created_at is None else created,
            "active": status.active,
            "retired": None if status.active else _iso(status.retired_at),
            "retired_estimated": status.estimated,
            "in_jwks": status.published(now),
            "jwks_until": None if status.jwks_until is None else _iso(status.jwks_until),
        }
        if status.active:
            table.add((status.kid, created, "active", "listed, signs new credentials"), record)
            continue
        retired = f"retired {'by' if status.estimated else 'at'} {_iso(status.retired_at)}"
        if status.jwks_until is None:
            jwks = "listed"
        elif status.published(now):
            jwks = f"leaves the JWKS at {_iso(status.jwks_until)}"
        else:
            jwks = f"left the JWKS at {_iso(status.jwks_until)}"
        table.add((status.kid, created, retired, jwks), record)
    table.echo(as_json=as_json)


def _keyring_or_exit(settings: Settings) -> KeyRing:
    """The keys in STEPUP_KEYS_DIR (a first key if there is none); an unusable one is a line."""
    from bot.wiring import open_keyring
    from core.errors import StepupError

    try:
        return open_keyring(settings)
    except StepupError as exc:
        raise fail(exc.detail) from None


def _credential_lifetime(settings: Settings) -> timedelta:
    """The longest credential lifetime: the policy's, else the API's cap (with a warning)."""
    from core.errors import StepupError
    from core.keyretention import REQUESTED_TTL_CAP, longest_credential_ttl
    from core.policy import load_policy

    try:
        return longest_credential_ttl(load_policy(settings.policy_file))
    except StepupError as exc:
        typer.echo(
            f"warning: the policy was not read ({exc.detail}); assuming credentials live up "
            f"to the API's cap of {_duration(REQUESTED_TTL_CAP)}",
            err=True,
        )
        return REQUESTED_TTL_CAP


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return "unknown"
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _duration(delta: timedelta) -> str:
    from core.durations import format_duration

    return format_duration(delta)
