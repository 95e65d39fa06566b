"""``stepup db upgrade`` and ``stepup keys rotate``: the schema and the signing keys."""

from __future__ import annotations

import typer

from bot.cli.common import settings_or_exit

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
    """Make a new signing key active; old public keys stay in the JWKS for verification."""
    from bot.wiring import open_keyring

    settings = settings_or_exit()
    ring = open_keyring(settings)
    old = ring.active_kid
    new = ring.rotate()
    typer.echo(f"active key {new} (was {old}; its public key is kept for verification)")
