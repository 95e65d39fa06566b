"""The layers' boundaries, both directions: core imports no Slack or web framework (nor the
edges), and the edges write no SQL (only the wiring touches the database layer directly)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB_AND_SLACK = ("slack_bolt", "slack_sdk", "fastapi", "starlette", "uvicorn", "bot")
SQL = ("sqlalchemy", "core.storage.tables")
SQL_ALLOWED = {"bot/wiring.py"}  # builds the Database the engine is given


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def offenders(package: str, banned: tuple[str, ...], allowed: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in allowed or name.startswith("bot/slack_emulator/"):
            continue
        found += [
            f"{name}: {module}"
            for module in imports(path)
            if any(module == b or module.startswith(b + ".") for b in banned)
        ]
    return found


def test_core_imports_no_slack_web_framework_or_edge() -> None:
    assert offenders("core", WEB_AND_SLACK, set()) == []


def test_the_edges_write_no_sql() -> None:
    assert offenders("bot", SQL, SQL_ALLOWED) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import select\nimport slack_sdk.web\n")
    assert list(imports(bad)) == ["sqlalchemy", "slack_sdk.web"]
