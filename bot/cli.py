"""The ``stepup`` command line (DESIGN §10)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from bot.cli_common import fail, now_utc, settings_or_exit
from core.errors import StepupError

app = typer.Typer(
    help="stepup: Slack approvals and just-in-time credentials for AI agents.", no_args_is_help=True
)
policy_app = typer.Typer(help="Check and explain policy files.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the audit log.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


# -- policy ---------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(file: Annotated[Path, typer.Argument(help="Policy YAML file")]) -> None:
    """Validate a policy file; exit 1 with the rule and field at fault."""
    from core.policy import load_policy

    try:
        policy = load_policy(file)
    except (StepupError, OSError) as exc:
        detail = exc.detail if isinstance(exc, StepupError) else str(exc)
        # Read errors already start with the path; say it once.
        raise fail(detail if detail.startswith(f"{file}:") else f"{file}: {detail}") from None
    typer.echo(
        f"{file}: OK — {len(policy.rule_names)} rules, "
        f"{len(policy.groups)} approver groups, {policy.digest}"
    )


def _read_intent(path: Path) -> tuple[dict[str, Any], datetime]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("the request file must hold a mapping of fields")
    when = raw.pop("now", None)
    now = datetime.fromisoformat(str(when).replace("Z", "+00:00")) if when else now_utc()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return raw, now


@policy_app.command("explain")
def policy_explain(
    file: Annotated[Path, typer.Argument(help="Policy YAML file")],
    request: Annotated[
        Path,
        typer.Option(
            "--request",
            help="JSON or YAML file with the request fields (and optional `agent`, `now`)",
        ),
    ],
) -> None:
    """Show which rule decides a request and why every other rule did not."""
    from core.inputs import intent_from_mapping
    from core.policy import explain, load_policy

    try:
        policy = load_policy(file)
        fields, now = _read_intent(request)
        agent = str(fields.pop("agent", "cli"))
        intent = intent_from_mapping(fields, agent=agent)
        typer.echo(explain(policy, intent, now).render())
    except StepupError as exc:
        raise fail(exc.detail) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise fail(f"{request}: {exc}") from None


# -- database & keys ------------------------------------------------------------------------


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
    """Make a new signing key active; old public keys stay in the JWKS for verification."""
    from bot.wiring import open_keyring

    settings = settings_or_exit()
    ring = open_keyring(settings)
    old = ring.active_kid
    new = ring.rotate()
    typer.echo(f"active key {new} (was {old}; its public key is kept for verification)")


# -- audit ----------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain and every signed decision; exit 1 naming the first bad entry."""
    from bot.wiring import open_database, open_keyring
    from core.audit.chain import verify_chain
    from core.audit.signatures import decision_signature_check
    from core.errors import AuditChainBroken
    from core.storage.audit_store import chain_snapshot, iter_entries, read_head

    settings = settings_or_exit()
    if not settings.keys_dir.is_dir():
        # Verifying with a fresh key would call every signed decision forged.
        raise fail(
            f"no signing keys at {settings.keys_dir}: point STEPUP_KEYS_DIR at the service's"
        )
    db = open_database(settings)
    check = decision_signature_check(open_keyring(settings))
    try:
        # One snapshot for head and entries: on PostgreSQL an entry appended by the running
        # service between the two reads would otherwise look like tampering.
        with chain_snapshot(db) as session:
            report = verify_chain(
                iter_entries(session), head=read_head(session), check_signature=check
            )
    except AuditChainBroken as exc:
        raise fail(f"audit chain broken at {exc.detail}") from None
    finally:
        db.dispose()
    typer.echo(
        f"audit chain intact: {report.entries} entries, head {report.head_seq} {report.head_hash}"
    )


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 time: only entries at or after it")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout)")
    ] = None,
) -> None:
    """Write the audit log as JSON Lines for a SIEM."""
    from bot.wiring import open_database
    from core.audit.chain import format_time
    from core.storage.audit_store import iter_entries

    since_at = None
    if since:
        try:
            since_at = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise fail(f"--since {since!r} is not an ISO 8601 time") from None
        if since_at.tzinfo is None:
            since_at = since_at.replace(tzinfo=UTC)
    settings = settings_or_exit()
    db = open_database(settings)
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    count = 0
    try:
        with db.read() as session:
            for entry in iter_entries(session, since=since_at):
                out.write(
                    json.dumps(
                        {
                            "seq": entry.seq,
                            "at": format_time(entry.at),
                            "kind": entry.kind,
                            "request_id": entry.request_id,
                            "actor": entry.actor,
                            "data": json.loads(entry.data),
                            "prev_hash": entry.prev_hash,
                            "hash": entry.hash,
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
                count += 1
    finally:
        if output:
            out.close()
        db.dispose()
    if output:
        typer.echo(f"wrote {count} entries to {output}")


from bot.cli_admin import register as _register_admin  # noqa: E402
from bot.cli_digest import register as _register_digest  # noqa: E402

_register_admin(app)
_register_digest(app)


def main() -> None:  # pragma: no cover - console entry point
    """The `stepup` command: a database that cannot be reached is one clear line, no traceback."""
    from sqlalchemy.exc import OperationalError

    try:
        app()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        typer.echo(f"error: cannot use the database: {reason}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
