"""Sealed handles: a revocation handle that must carry a secret (a GitHub installation token can
only be revoked by presenting it) is stored encrypted under a key the database does not hold.

A reader of the database alone cannot use a sealed handle; the issuer that holds the key material
(the GitHub App's private key) can. The format is versioned so the scheme can change later:
``v1.`` + base64url(nonce || AES-256-GCM ciphertext and tag), without padding. The ``context``
(the issuer's name) is bound as associated data, so a handle copied to another issuer's row does
not open there.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1."
DEFAULT_PURPOSE = b"stepup sealed handle v1"
_NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value cannot be opened: wrong format, wrong key, wrong context, or tampered.
    One opaque error on purpose (which of these it was would only help an attacker)."""

    def __init__(self) -> None:
        super().__init__("sealed value cannot be opened (tampered, wrong key or wrong issuer)")


def _key(key_material: bytes, purpose: bytes) -> bytes:
    """A dedicated AES key, so the key material itself (a signing key) is never used to
    encrypt and different purposes never share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key_material)


def seal(
    key_material: bytes, plaintext: str, context: str, *, purpose: bytes = DEFAULT_PURPOSE
) -> str:
    """Encrypt ``plaintext``; only ``unseal`` with the same key material, context and purpose
    opens it."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(key_material, purpose)).encrypt(
        nonce, plaintext.encode(), context.encode()
    )
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def unseal(
    key_material: bytes, sealed: str, context: str, *, purpose: bytes = DEFAULT_PURPOSE
) -> str:
    """Open what ``seal`` produced; raises ``SealError`` for anything else."""
    if not sealed.startswith(PREFIX):
        raise SealError
    body = sealed[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise SealError from exc
    if len(raw) <= _NONCE_BYTES:
        raise SealError
    nonce, ciphertext = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    try:
        plain = AESGCM(_key(key_material, purpose)).decrypt(nonce, ciphertext, context.encode())
    except InvalidTag as exc:
        raise SealError from exc
    try:
        return plain.decode()
    except UnicodeDecodeError as exc:  # pragma: no cover - only reachable with our own key
        raise SealError from exc
