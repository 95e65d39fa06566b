"""``stepup audit verify`` and ``stepup audit export``: the audit log, read from the database."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import fail, settings_or_exit

audit_app = typer.Typer(help="Verify and export the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain and every signed decision; exit 1 naming the first bad entry."""
    from bot.wiring import open_database, open_keyring
    from core.audit.signatures import decision_signature_check
    from core.errors import AuditChainBroken
    from core.storage.audit_store import verify_stored_chain

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
        report = verify_stored_chain(db, check_signature=check)
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
    from core.audit.chain import iso_utc
    from core.storage.audit_store import read_entries

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
        for entry in read_entries(db, since=since_at):
            out.write(
                json.dumps(
                    {
                        "seq": entry.seq,
                        "at": iso_utc(entry.at),
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
