"""What every group of `stepup` commands shares: one way to fail and to load settings."""

from __future__ import annotations

import typer

from bot.settings import Settings, load_settings
from core.errors import StepupError


def fail(message: str, code: int = 1) -> typer.Exit:
    """``raise fail(...)``: the message on stderr as one ``error:`` line, then exit ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except StepupError as exc:
        raise fail(exc.detail) from None
