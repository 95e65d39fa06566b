"""``stepup audit verify``, ``audit export`` and ``audit keys``: checking the audit log, in
the database or offline in an export, and the public keys an auditor needs for it."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import fail, settings_or_exit

if TYPE_CHECKING:
    from core.audit.verification import Anchoring
    from core.keys import KeyRing
    from core.storage.audit_verify import AuditVerification

audit_app = typer.Typer(help="Verify and export the audit log.", no_args_is_help=True)

MISMATCHES_SHOWN = 100


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint (JWS) held outside the database, e.g. from a daily digest, or a "
            "file of them, one a line; repeatable. The log must still hold each one's entry.",
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Verify this export (stepup audit export) offline instead of the database: "
            "needs --jwks, no database, no private key, no STEPUP_* settings."
        ),
    ] = None,
    jwks: Annotated[
        str | None,
        typer.Option(
            help="JWKS file or URL of the public keys (all of them: see stepup audit keys). "
            "Default for the database: the keys in STEPUP_KEYS_DIR/public."
        ),
    ] = None,
) -> None:
    """Walk the hash chain, every signed decision and checkpoint, and compare every request
    with its audit entries; exit 1 naming the first bad entry or each differing field."""
    if export is not None:
        if jwks is None:
            raise fail("--export needs --jwks: the public keys to check signatures with")
        _verify_export(export, jwks, checkpoint or [])
        return
    _verify_database(jwks, checkpoint or [])


def _verify_database(jwks: str | None, checkpoint_values: list[str]) -> None:
    from bot.cli.audit_inputs import load_checkpoints, load_jwks
    from bot.wiring import open_database
    from core.audit.keyset import public_keyring
    from core.errors import AuditChainBroken, StepupError
    from core.storage.audit_store import log_length
    from core.storage.audit_verify import verify_database

    settings = settings_or_exit()
    try:
        keyring = load_jwks(jwks) if jwks else public_keyring(settings.keys_dir)
    except StepupError as exc:
        raise fail(exc.detail) from None
    anchors = load_checkpoints(checkpoint_values, keyring)
    db = open_database(settings)
    try:
        entries = log_length(db)
        if keyring is None and entries:
            # Verifying with a fresh key would call every signed decision forged.
            raise fail(
                f"no signing keys at {settings.keys_dir}: point STEPUP_KEYS_DIR at the "
                "service's (or give --jwks)"
            )
        result = verify_database(db, keyring, anchors=anchors)
    except AuditChainBroken as exc:
        raise fail(f"audit chain broken at {exc.detail}") from None
    finally:
        db.dispose()
    _report_requests(result)
    if keyring is None and result.requests.requests == 0:
        typer.echo(
            "the audit log is empty and there are no signing keys yet (a fresh install): "
            "nothing to verify"
        )
        return
    chain = result.chain
    typer.echo(
        f"audit chain intact: {chain.entries} entries, head {chain.head_seq} {chain.head_hash}"
    )
    _report_pending(result)
    _report_anchoring(result.anchoring)
    waiting = result.requests.pending
    later = f"; {waiting} with entries pending not compared yet" if waiting else ""
    typer.echo(
        f"requests: {result.requests.requests} compared with their audit entries, all match" + later
    )
    from core.storage.audit_store import PENDING_STALE

    oldest = result.pending.oldest_at
    if oldest is not None and datetime.now(UTC) - oldest > PENDING_STALE:
        # Not verified, and their requests not compared: a log that cannot be checked is not
        # called intact (a chainer that stopped, or rows put there by hand, would hide there).
        raise fail(
            f"{result.pending.count} audit entries, the oldest written at "
            f"{oldest.isoformat()}, have waited over {int(PENDING_STALE.total_seconds())} s to "
            "be chained: not verified; run stepup audit chain (or start stepup serve), then "
            "verify again"
        )


def _report_pending(result: AuditVerification) -> None:
    """How many entries are written but not yet chained: never verified, never hidden."""
    pending = result.pending
    if pending.count == 0:
        typer.echo("pending: 0 entries waiting to be chained")
        return
    oldest = pending.oldest_at
    when = f", the oldest written at {oldest.isoformat()}" if oldest is not None else ""
    typer.echo(
        f"pending: {pending.count} entries written but not yet chained{when}: not verified "
        "(nor counted above); run verify again once they are chained"
    )


def _report_requests(result: AuditVerification) -> None:
    """Each differing field on stderr, then exit 1; nothing when every request matches."""
    report = result.requests
    if report.ok:
        return
    for mismatch in report.mismatches[:MISMATCHES_SHOWN]:
        typer.echo(f"error: {mismatch}", err=True)
    shown = min(len(report.mismatches), MISMATCHES_SHOWN)
    more = f" (the first {shown} shown)" if report.total > shown else ""
    chain = result.chain
    pending = f"; {result.pending.count} entries pending" if result.pending.count else ""
    raise fail(
        f"the database does not match its audit log: {report.total} differences{more}; "
        f"the chain itself verifies ({chain.entries} entries, head {chain.head_seq} "
        f"{chain.head_hash}{pending})"
    )


def _report_anchoring(anchoring: Anchoring) -> None:
    from core.audit.verification import anchoring_note

    typer.echo(
        f"signatures: {anchoring.decisions} signed decisions and {anchoring.checkpoints} "
        "checkpoints verified"
    )
    for anchor in anchoring.confirmed:
        typer.echo(f"confirmed: the {anchor.describe()} matches entry {anchor.seq}")
    note = anchoring_note(anchoring)
    if note is not None:
        typer.echo(f"warning: {note}", err=True)
    if anchoring.before_start:
        # A checkpoint the log cannot be held to proves nothing: an export that starts after
        # it could be made up from there on. Not "intact" for the auditor who asked.
        first = anchoring.before_start[0]
        raise fail(
            f"the {first.describe()} is before the first entry verified, so it was not "
            f"checked ({len(anchoring.before_start)} checkpoint(s) given in all): verify a log "
            "or export that holds its entry"
        )


def _verify_export(path: Path, jwks: str, checkpoint_values: list[str]) -> None:
    from bot.cli.audit_inputs import load_checkpoints, load_jwks
    from core.audit.export import verify_export
    from core.errors import AuditChainBroken, StepupError

    keyring: KeyRing = load_jwks(jwks)
    anchors = load_checkpoints(checkpoint_values, keyring)
    try:
        with path.open(encoding="utf-8") as lines:
            result = verify_export(lines, keyring, anchors=anchors)
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except AuditChainBroken as exc:
        raise fail(f"export broken at {exc.detail}") from None
    except StepupError as exc:
        raise fail(f"{path}: {exc.detail}") from None
    chain = result.chain
    if result.first_seq is None:
        typer.echo(f"{path} holds no entries")
        return
    typer.echo(
        f"export intact: {chain.entries} entries, seq {result.first_seq} to {chain.head_seq}, "
        f"last hash {chain.head_hash}"
    )
    if result.starts_mid_chain:
        typer.echo(
            f"note: the export starts mid-chain at seq {result.first_seq} (exported with "
            f"--since): verified from its first entry's prev_hash {result.first_prev_hash}; "
            "entries before it are not covered",
            err=True,
        )
    _report_anchoring(result.anchoring)


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 time: only entries at or after it")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout)")
    ] = None,
) -> None:
    """Write the audit log as JSON Lines for a SIEM (verifiable offline: audit verify
    --export)."""
    from bot.wiring import open_database
    from core.audit.export import export_line
    from core.storage.audit_store import pending_count, read_entries

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
            out.write(export_line(entry))
            count += 1
        with db.read() as session:
            pending = pending_count(session)
    finally:
        if output:
            out.close()
        db.dispose()
    if output:
        typer.echo(f"wrote {count} entries to {output}")
    if pending:
        # An export holds chained entries only (a pending one has no seq or hash yet).
        typer.echo(
            f"note: {pending} entries are pending (written, not yet chained) and not in this "
            "export: they are exported once chained (stepup serve chains them within a second; "
            "stepup audit chain does it now)",
            err=True,
        )


@audit_app.command("chain")
def audit_chain() -> None:
    """Chain the audit entries written but not yet chained (PostgreSQL). stepup serve does it
    within a second; this is for a database no replica serves."""
    from bot.wiring import open_database, open_keyring
    from core.audit.checkpoints import CheckpointSchedule
    from core.storage.audit_chainer import chain_pending
    from core.storage.audit_store import log_length

    settings = settings_or_exit()
    db = open_database(settings)
    try:
        schedule = None
        if settings.audit_checkpoint_entries > 0 and log_length(db):
            schedule = CheckpointSchedule(open_keyring(settings), settings.audit_checkpoint_entries)
        chained = chain_pending(db.engine, schedule=schedule)
    finally:
        db.dispose()
    typer.echo(f"chained {chained} pending entries")


@audit_app.command("keys")
def audit_keys() -> None:
    """Print a JWKS of every public key in STEPUP_KEYS_DIR/public, the active one first: all
    an auditor needs to verify an export (the JWKS endpoint drops retired keys)."""
    from core.audit.keyset import published_jwks
    from core.errors import StepupError

    settings = settings_or_exit()
    try:
        document = published_jwks(settings.keys_dir)
    except StepupError as exc:
        raise fail(exc.detail) from None
    if not document["keys"]:
        raise fail(f"no public keys in {settings.keys_dir / 'public'}")
    typer.echo(json.dumps(document, indent=2))
