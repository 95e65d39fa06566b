"""What every group of `stepup` commands shares: one way to fail, to load settings and to
print a list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

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


JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print a JSON array of objects instead of the table")
]


@dataclass(frozen=True, slots=True)
class Table:
    """What a list command prints: a header row then tab-separated rows, or with ``--json`` a
    JSON array with one object per row (``records``, whose values keep their JSON types)."""

    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def add(self, cells: Sequence[str], record: dict[str, Any]) -> None:
        self.rows.append(cells)
        self.records.append(record)

    def echo(self, *, as_json: bool) -> None:
        if as_json:
            typer.echo(json.dumps(self.records, indent=2))
            return
        for cells in (self.header, *self.rows):
            typer.echo("\t".join(cells))
