"""The SQLite database is its owner's alone: files 0600 in a directory created 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.storage.database import Database
from core.storage.migrate import upgrade


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, so nothing below owes its modes to the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_fresh_database_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "state" / "nested" / "stepup.db"
    db = Database(f"sqlite:///{path}")
    try:
        upgrade(db.engine)
        with db.write() as session:  # a write, so the -wal file exists
            session.execute(text("update audit_head set seq = seq"))
        assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
        files = [path, path.with_name("stepup.db-wal"), path.with_name("stepup.db-shm")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        db.dispose()


def test_existing_files_are_tightened_at_start_but_never_loosened(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "stepup.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    with db.write() as session:
        session.execute(text("update audit_head set seq = seq"))
    wal, shm = path.with_name("stepup.db-wal"), path.with_name("stepup.db-shm")
    path.chmod(0o644)  # as an older stepup, or a copy, left them
    wal.chmod(0o666)
    shm.chmod(0o400)  # stricter than needed: kept
    tmp_path.chmod(0o755)  # an existing directory is not stepup's to change
    restarted = Database(f"sqlite:///{path}")
    try:
        assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o400)
        assert mode(tmp_path) == 0o755
        path.chmod(0o640)
        upgrade(restarted.engine)  # and after each migration
        assert mode(path) == 0o600
    finally:
        shm.chmod(0o600)
        restarted.dispose()
        db.dispose()
