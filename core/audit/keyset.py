"""Every public key the service ever signed with, read from ``STEPUP_KEYS_DIR/public``.

The log must stay verifiable for as long as it is kept, but the JWKS endpoint serves only
the keys whose tokens may still be live; an auditor needs them all. ``published_jwks`` reads
every ``public/<kid>.pem`` (each name checked against its key's RFC 7638 thumbprint), the
active key first, then the newest; verifying needs no private key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.errors import ConfigError
from core.keyfiles import ACTIVE_KEY_FILE, PUBLIC_DIR, jwk_thumbprint
from core.keys import KeyRing, public_jwk


def published_jwks(keys_dir: Path, *, active_first: bool = True) -> dict[str, list[dict[str, str]]]:
    """A JWKS of every public key in ``keys_dir/public`` (empty when there is none): the
    active one first when ``active_first`` (which reads ``active.key``), then the newest."""
    found: list[tuple[float, str, Ed25519PublicKey]] = []
    for path in (keys_dir / PUBLIC_DIR).glob("*.pem"):
        key = _read_public(path)
        found.append((path.stat().st_mtime, path.stem, key))
    active = _active_kid(keys_dir) if active_first else None
    found.sort(key=lambda item: (item[1] != active, -item[0], item[1]))
    return {"keys": [public_jwk(key) for _, _, key in found]}


def public_keyring(keys_dir: Path) -> KeyRing | None:
    """A verification-only ring of every published key, read without touching the private
    key; None when there is none."""
    jwks = published_jwks(keys_dir, active_first=False)
    return KeyRing.from_jwks(jwks) if jwks["keys"] else None


def keyring_from_jwks(jwks: Any) -> KeyRing:
    """A verification-only ring from a parsed JWKS document; ConfigError when unusable."""
    if not isinstance(jwks, dict):
        raise ConfigError("a JWKS is a JSON object with a 'keys' list")
    return KeyRing.from_jwks(jwks)


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    if jwk_thumbprint(key) != path.stem:
        raise ConfigError(f"{path}: the file name is not the key's RFC 7638 thumbprint")
    return key


def _active_kid(keys_dir: Path) -> str | None:
    """The active key's kid, through the ring's own loader, when ``active.key`` is there;
    None for a copy of the public keys alone (or a private key this user cannot read)."""
    if not (keys_dir / ACTIVE_KEY_FILE).exists():
        return None
    try:
        return KeyRing.load_or_create(keys_dir).active_kid
    except (ConfigError, OSError):  # an auditor's copy may hold the public keys alone
        return None
