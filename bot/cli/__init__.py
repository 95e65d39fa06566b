"""The ``stepup`` command line (DESIGN §10): ``app`` is the Typer tree, ``main`` the entry point."""

from bot.cli.root import app, main

__all__ = ["app", "main"]
