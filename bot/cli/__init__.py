"""The ``stepup`` command line: ``app`` is the Typer tree, ``main`` the entry point."""

from bot.cli.root import app, main

__all__ = ["app", "main"]
