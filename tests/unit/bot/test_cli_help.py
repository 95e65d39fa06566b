"""Every ``stepup`` command, group, argument and option has help text: ``--help`` is the manual."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from bot.cli import app


def walk(command: Any, path: str = "stepup") -> Iterator[tuple[str, Any]]:
    """The command and, for a group, everything under it (typer's own click, so duck-typed)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, f"{path} {name}")


def commands() -> list[tuple[str, Any]]:
    return list(walk(typer.main.get_command(app)))


def test_the_walk_reaches_every_group_and_command() -> None:
    paths = {path for path, _ in commands()}
    for expected in (
        "stepup serve",
        "stepup agents list",
        "stepup requests show",
        "stepup policy explain",
        "stepup audit verify",
        "stepup db upgrade",
        "stepup keys list",
    ):
        assert expected in paths


def test_every_command_and_group_has_help() -> None:
    missing = [path for path, command in commands() if not (command.help or "").strip()]
    assert missing == []


def test_every_argument_and_option_has_help() -> None:
    missing = []
    for path, command in commands():
        for param in command.params:
            text = getattr(param, "help", None)  # typer's arguments carry help, click's do not
            if param.name != "help" and not (text or "").strip():
                missing.append(f"{path} {param.name}")
    assert missing == []
