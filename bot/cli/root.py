"""The ``stepup`` command tree, assembled from the command groups."""

from __future__ import annotations

import typer

from bot.cli import admin, demo, digest, mcp_proxy
from bot.cli.audit import audit_app
from bot.cli.issuers import issuers_app
from bot.cli.maintenance import db_app, keys_app
from bot.cli.policy import policy_app
from bot.cli.trust import trust_app

app = typer.Typer(
    help="stepup: Slack approvals and just-in-time credentials for AI agents.", no_args_is_help=True
)
# Typer lists commands in the order they are added: keep it, `stepup --help` is read by people.
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(issuers_app, name="issuers")
admin.register(app)
app.add_typer(trust_app, name="trust")
digest.register(app)
demo.register(app)
mcp_proxy.register(app)


def main() -> None:  # pragma: no cover - console entry point
    """The `stepup` command: a database that cannot be reached is one clear line, no traceback."""
    from core.storage.database import unreachable_reason

    try:
        app()
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            raise
        typer.echo(f"error: cannot use the database: {reason}", err=True)
        raise SystemExit(1) from None
