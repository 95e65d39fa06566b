"""Key files on disk: created 0600 with no window, written atomically, scrubbed on removal."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError

ACTIVE_KEY_FILE = "active.key"
PUBLIC_DIR = "public"
LOCK_FILE = ".rotate.lock"
_MAX_KEY_FILE_BYTES = 65_536

# What a cheap ``stat`` tells about a file: (inode, size, mtime_ns, ctime_ns); None if absent.
# A rename gives a new inode, a write a new size or mtime, a chmod a new ctime.
FileStamp = tuple[int, int, int, int] | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: base64url SHA-256 of ``{"crv","kty","x"}`` in that order, no spaces."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _ensure_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{directory} is not a directory")
    if info.st_mode & 0o022:
        raise ConfigError(
            f"{directory} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o});"
            f" run: chmod 700 {directory}"
        )


def file_stamp(path: Path) -> FileStamp:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@contextmanager
def rotation_lock(directory: Path) -> Iterator[None]:
    """Hold the keys directory's lock: one rotation at a time, across processes and hosts
    that share the directory (``flock``; on NFS, a v4 mount)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_checked(path: Path, flags: int) -> int | None:
    """Open a private key file, refusing one that group or others may access; None if absent."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:
        if flags & os.O_RDWR:
            raise
        raise ConfigError(f"private key {path} is not readable by this user") from None
    info = os.fstat(fd)  # on the open file: no window between the check and the read
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        os.close(fd)
        raise ConfigError(
            f"private key {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    return fd


def _open_for_scrub(path: Path) -> tuple[int | None, bool]:
    """Open the retiring key read-write so it can be scrubbed; read-only (no scrub) if 0400."""
    try:
        return _open_checked(path, os.O_RDWR), True
    except PermissionError:
        return _open_checked(path, os.O_RDONLY), False


def _read_fd(fd: int, path: Path) -> bytes:
    data = os.pread(fd, _MAX_KEY_FILE_BYTES + 1, 0)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{path} is too large to be an Ed25519 key")
    return data


def _parse_private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def _read_private_key(path: Path) -> Ed25519PrivateKey | None:
    fd = _open_checked(path, os.O_RDONLY)
    if fd is None:
        return None
    try:
        return _parse_private_key(_read_fd(fd, path), path)
    finally:
        os.close(fd)


def _read_public_key(path: Path, kid: str) -> Ed25519PublicKey | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    if jwk_thumbprint(key) != kid:
        raise ConfigError(f"{path}: the file name is not the key's RFC 7638 thumbprint")
    return key


def _write_new_file(directory: Path, prefix: str, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary file created with ``mode`` (never wider), fsynced."""
    while True:
        path = directory / f".{prefix}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, mode)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private_tmp(directory: Path, key: Ed25519PrivateKey) -> Path:
    return _write_new_file(directory, ACTIVE_KEY_FILE, _private_pem(key), 0o600)


def _create_first_key(directory: Path) -> Ed25519PrivateKey:
    """Create ``active.key`` unless another process beats us to it; either way, return it."""
    active_path = directory / ACTIVE_KEY_FILE
    key = Ed25519PrivateKey.generate()
    tmp_path = _write_private_tmp(directory, key)
    try:
        os.link(tmp_path, active_path)  # atomic, and fails if the name already exists
        _fsync_dir(directory)
    except FileExistsError:
        winner = _read_private_key(active_path)
        if winner is None:  # created, then deleted between our two calls
            raise ConfigError(f"{active_path} vanished while being created") from None
        return winner
    finally:
        tmp_path.unlink(missing_ok=True)
    return key


def write_file_atomically(directory: Path, name: str, data: bytes, mode: int) -> None:
    """Replace ``directory/name`` with ``data``: readers see the old file or the new one."""
    tmp_path = _write_new_file(directory, name, data, mode)
    try:
        os.replace(tmp_path, directory / name)
        _fsync_dir(directory)
    finally:
        tmp_path.unlink(missing_ok=True)


def _write_public_key(directory: Path, public_key: Ed25519PublicKey) -> None:
    """Publish ``public/<kid>.pem``; idempotent, since the content is fixed by the name."""
    public_dir = directory / PUBLIC_DIR
    target = public_dir / f"{jwk_thumbprint(public_key)}.pem"
    if target.exists():
        return
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp_path = _write_new_file(public_dir, "public", pem, 0o644)
    try:
        os.replace(tmp_path, target)
        _fsync_dir(public_dir)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scrub(fd: int) -> None:
    """Overwrite a retired private key before its last reference goes.

    Best effort: copy-on-write filesystems and SSD wear levelling may keep old blocks.
    """
    size = os.fstat(fd).st_size
    os.pwrite(fd, b"\0" * size, 0)
    os.fsync(fd)
