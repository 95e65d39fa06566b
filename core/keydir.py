"""The keys directory as a whole: what a ring reads from it, and a rotation.

``read_view`` takes one look at the directory (the active key, every public key, ``keys.json``);
``rotate_keys`` retires the active key, under a lock shared by every process on the directory.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError
from core.keyfiles import (
    ACTIVE_KEY_FILE,
    PUBLIC_DIR,
    FileStamp,
    _fsync_dir,
    _open_for_scrub,
    _parse_private_key,
    _read_fd,
    _read_private_key,
    _read_public_key,
    _scrub,
    _write_private_tmp,
    _write_public_key,
    file_stamp,
    jwk_thumbprint,
    rotation_lock,
)
from core.keyretention import (
    MANIFEST_FILE,
    KeyRecord,
    key_statuses,
    read_manifest,
    rotation_records,
    write_manifest,
)

KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # unpadded base64url of a SHA-256 digest

# active.key, keys.json and the public directory: any rotation changes at least one of them.
DirStamp = tuple[FileStamp, FileStamp, FileStamp]


def dir_stamp(directory: Path) -> DirStamp:
    """Three ``stat`` calls: cheap enough to repeat every few seconds."""
    return (
        file_stamp(directory / ACTIVE_KEY_FILE),
        file_stamp(directory / MANIFEST_FILE),
        file_stamp(directory / PUBLIC_DIR),
    )


@dataclass(frozen=True)
class KeyView:
    """What a ring knows: the key that signs, every public key, and their times."""

    active_kid: str
    private_key: Ed25519PrivateKey | None  # None: a verification-only ring
    public: dict[str, Ed25519PublicKey]
    created: dict[str, datetime | None] = field(default_factory=dict)  # public file times
    records: dict[str, KeyRecord] = field(default_factory=dict)
    stamp: DirStamp | None = None  # the directory as it was just before it was read
    problems: tuple[str, ...] = ()  # public files skipped (lenient reads only)

    def with_key(self, kid: str, key: Ed25519PublicKey, created: datetime | None) -> KeyView:
        return KeyView(
            self.active_kid,
            self.private_key,
            self.public | {kid: key},
            self.created | {kid: created},
            self.records,
            self.stamp,
            self.problems,
        )


def read_view(directory: Path, *, strict: bool) -> KeyView:
    """The directory now. The active key must be there, private (0600 or 0400) and whole;
    ``ConfigError`` otherwise. A bad public file is an error when ``strict``, else skipped
    and named in ``problems``. Publishes the active key's public file if it is missing."""
    stamp = dir_stamp(directory)
    path = directory / ACTIVE_KEY_FILE
    private_key = _read_private_key(path)
    if private_key is None:
        raise ConfigError(f"{path} is missing")
    active_kid = jwk_thumbprint(private_key.public_key())
    # A key signs only once verifiers can find it (also repairs a crash after writing it).
    _write_public_key(directory, private_key.public_key())
    records = read_manifest(directory)
    public: dict[str, Ed25519PublicKey] = {active_kid: private_key.public_key()}
    problems: list[str] = []
    created = public_times(directory)
    for kid in list(created):
        try:
            key = _read_public_key(directory / PUBLIC_DIR / f"{kid}.pem", kid)
        except ConfigError as exc:
            if strict:
                raise
            problems.append(exc.detail)
            key = None
        if key is None:
            del created[kid]
        else:
            public[kid] = key
    if active_kid not in created:  # just written: no time seen before it was
        created[active_kid] = datetime.now(UTC)
    return KeyView(active_kid, private_key, public, created, records, stamp, tuple(problems))


def public_times(directory: Path) -> dict[str, datetime | None]:
    """kid → modification time of ``public/<kid>.pem``, newest first (then by kid)."""
    found: list[tuple[float, str]] = []
    for path in (directory / PUBLIC_DIR).glob("*.pem"):
        if KID.match(path.stem):
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime, path.stem))
    found.sort(key=lambda item: (-item[0], item[1]))
    return {kid: datetime.fromtimestamp(mtime, UTC) for mtime, kid in found}


def rotate_keys(directory: Path, *, now: datetime, lifetime: timedelta) -> str:
    """Make a new key active and retire the one on disk; return the new kid.

    Order matters to every reader: the new public key first (no token can carry a kid that
    is not published), then ``keys.json`` with the retirement, then ``active.key`` by rename.
    The old private key is scrubbed; its public file stays. One rotation at a time.
    """
    active_path = directory / ACTIVE_KEY_FILE
    with rotation_lock(directory):
        records = read_manifest(directory)  # a malformed file stops the rotation: say so
        new_key = Ed25519PrivateKey.generate()
        new_kid = jwk_thumbprint(new_key.public_key())
        _write_public_key(directory, new_key.public_key())
        tmp_path = _write_private_tmp(directory, new_key)
        try:
            old_fd, scrubbable = _open_for_scrub(active_path)
            try:
                if old_fd is not None:
                    # What is on disk may differ from a ring's memory: that is the key to retire.
                    old_key = _parse_private_key(_read_fd(old_fd, active_path), active_path)
                    _write_public_key(directory, old_key.public_key())
                    created = public_times(directory)
                    created.pop(new_kid, None)
                    before = key_statuses(
                        jwk_thumbprint(old_key.public_key()), created, records, lifetime=lifetime
                    )
                    records = rotation_records(
                        records, before, new_kid=new_kid, now=now, lifetime=lifetime
                    )
                else:
                    records = records | {new_kid: KeyRecord(created_at=now)}
                write_manifest(directory, records)
                os.replace(tmp_path, active_path)
                _fsync_dir(directory)
                if old_fd is not None and scrubbable:
                    _scrub(old_fd)
            finally:
                if old_fd is not None:
                    os.close(old_fd)
        finally:
            tmp_path.unlink(missing_ok=True)
    return new_kid
