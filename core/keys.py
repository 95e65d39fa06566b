"""The service's Ed25519 signing keys, and the JWS discipline every signed artefact follows.

On disk (``STEPUP_KEYS_DIR``, mode 0700, refused if group/world-writable)::

    active.key          PKCS8 PEM of the one private key that signs now (mode 0600)
    public/<kid>.pem    SubjectPublicKeyInfo PEM of every key that was ever active

``kid`` is the RFC 7638 JWK thumbprint of the public key, so a file name can be checked against
its content. Retired public keys are never deleted: signed decisions in the audit log must stay
verifiable for as long as the log is kept. A private key file that group or others can access
is refused, as ssh does. Every write goes to a fresh ``O_EXCL`` temporary file (mode 0600 from
the first byte), is fsynced, then linked or renamed into place, so a reader sees a whole key or
none and a crash leaves the previous, usable state. A crash may leave a ``.*.tmp`` file behind;
it is safe to delete.

``KeyRing.sign``/``KeyRing.verify`` are the only places that produce or check a JWS: alg
EdDSA only, ``kid`` chosen among the ring's keys only, an explicit ``typ`` so one kind of
signed object can never be replayed as another.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError, InvalidToken
from core.keyfiles import (
    ACTIVE_KEY_FILE,
    PUBLIC_DIR,
    _b64url,
    _b64url_decode,
    _create_first_key,
    _ensure_private_dir,
    _fsync_dir,
    _open_for_scrub,
    _parse_private_key,
    _raw_public,
    _read_fd,
    _read_private_key,
    _read_public_key,
    _scrub,
    _write_private_tmp,
    _write_public_key,
    jwk_thumbprint,
)

ALGORITHM = "EdDSA"

_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # unpadded base64url of a SHA-256 digest
_MAX_TOKEN_CHARS = 16_384
_UNSUPPORTED_HEADERS = frozenset({"crit", "b64", "jwk", "jku", "x5u", "x5c"})


class RejectedToken(InvalidToken):
    """``InvalidToken`` that carries a fixed reason code for logs; never any token content.

    ``str()`` stays the opaque "invalid token", so nothing leaks to whoever sent the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK a verifier needs, with ``kid``, ``use`` and ``alg``."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public_key)),
        "kid": jwk_thumbprint(public_key),
        "use": "sig",
        "alg": ALGORITHM,
    }


def _typ_matches(header_typ: object, expected: str) -> bool:
    """RFC 7515 §4.1.9: ``application/`` may be omitted and media types compare case-blind."""
    if not isinstance(header_typ, str):
        return False

    def bare(media_type: str) -> str:
        return media_type.lower().removeprefix("application/")

    return bare(header_typ) == bare(expected)


class KeyRing:
    """The active Ed25519 private key plus every public key that ever signed."""

    def __init__(
        self,
        *,
        active_kid: str,
        private_key: Ed25519PrivateKey | None,
        public_keys: Mapping[str, Ed25519PublicKey],
        directory: Path | None,
    ) -> None:
        if active_kid not in public_keys:
            raise ConfigError("the active key is missing from the key ring")
        self._active_kid = active_kid
        self._private_key = private_key
        self._public: dict[str, Ed25519PublicKey] = dict(public_keys)
        self._directory = directory

    # ----------------------------------------------------------------- construction

    @classmethod
    def load_or_create(cls, directory: Path) -> KeyRing:
        """Open the ring in ``directory``, creating the directory and a first key if needed."""
        _ensure_private_dir(directory)
        _ensure_private_dir(directory / PUBLIC_DIR)
        private_key = _read_private_key(directory / ACTIVE_KEY_FILE)
        if private_key is None:
            private_key = _create_first_key(directory)
        kid = jwk_thumbprint(private_key.public_key())
        # Also repairs a crash between writing active.key and its public copy.
        _write_public_key(directory, private_key.public_key())
        ring = cls(
            active_kid=kid,
            private_key=private_key,
            public_keys={kid: private_key.public_key()},
            directory=directory,
        )
        ring._scan_public_dir()
        return ring

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeyRing:
        """A verification-only ring from a JWKS (active key first), e.g. for ``audit verify``."""
        keys = jwks.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError("a JWKS needs a non-empty 'keys' list")
        public: dict[str, Ed25519PublicKey] = {}
        for position, jwk in enumerate(keys):
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ConfigError(f"JWKS key {position} is not an Ed25519 OKP key")
            try:
                key = Ed25519PublicKey.from_public_bytes(_b64url_decode(str(jwk.get("x", ""))))
            except ValueError:
                raise ConfigError(f"JWKS key {position} has an unusable 'x'") from None
            kid = jwk_thumbprint(key)
            if jwk.get("kid") != kid:
                raise ConfigError(f"JWKS key {position}: 'kid' is not its RFC 7638 thumbprint")
            public[kid] = key
        first_kid = next(iter(public))
        return cls(active_kid=first_kid, private_key=None, public_keys=public, directory=None)

    # ----------------------------------------------------------------- accessors

    @property
    def active_kid(self) -> str:
        return self._active_kid

    @property
    def private_key(self) -> Ed25519PrivateKey:
        if self._private_key is None:
            raise ConfigError("this key ring is for verification only: it holds no private key")
        return self._private_key

    def public_key(self, kid: str) -> Ed25519PublicKey:
        """The public key named ``kid``; ``InvalidToken`` if the ring never held it."""
        key = self._public.get(kid)
        if key is None and self._directory is not None and _KID.match(kid):
            # Another process may have rotated since we loaded: look for just this file.
            try:
                key = _read_public_key(self._directory / PUBLIC_DIR / f"{kid}.pem", kid)
            except ConfigError:  # a planted or corrupt file: load_or_create reports it loudly
                raise RejectedToken("unusable_kid") from None
            if key is not None:
                self._public[kid] = key
        if key is None:
            raise RejectedToken("unknown_kid")
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Every public key as a JWK, the active one first, then the newest retired ones."""
        if self._directory is not None:
            self._scan_public_dir()
        others = [kid for kid in self._public if kid != self._active_kid]
        ordered = [self._active_kid, *others]
        return {"keys": [public_jwk(self._public[kid]) for kid in ordered]}

    # ----------------------------------------------------------------- rotation

    def rotate(self) -> str:
        """Make a new key active; delete the old private key, keep its public key. New kid."""
        directory = self._directory
        if directory is None:
            raise ConfigError("a key ring loaded from a JWKS cannot rotate")
        new_key = Ed25519PrivateKey.generate()
        new_kid = jwk_thumbprint(new_key.public_key())
        # The public half goes first, so no token can exist whose key is not published.
        _write_public_key(directory, new_key.public_key())
        active_path = directory / ACTIVE_KEY_FILE
        tmp_path = _write_private_tmp(directory, new_key)
        try:
            old_fd, scrubbable = _open_for_scrub(active_path)
            try:
                if old_fd is not None:
                    # What is on disk may differ from memory if another process rotated.
                    old_key = _parse_private_key(_read_fd(old_fd, active_path), active_path)
                    _write_public_key(directory, old_key.public_key())
                os.replace(tmp_path, active_path)
                _fsync_dir(directory)
                if old_fd is not None and scrubbable:
                    _scrub(old_fd)
            finally:
                if old_fd is not None:
                    os.close(old_fd)
        finally:
            tmp_path.unlink(missing_ok=True)
        # The mapping's order is the JWKS order: the new key first, then the newest retired.
        self._public = {new_kid: new_key.public_key()} | self._public
        self._active_kid = new_kid
        self._private_key = new_key
        return new_kid

    # ----------------------------------------------------------------- JWS

    def sign(self, payload: Mapping[str, Any], *, typ: str) -> str:
        """A compact JWS of ``payload`` with the active key: alg EdDSA, ``typ``, ``kid``."""
        return jwt.encode(
            dict(payload),
            self.private_key,
            algorithm=ALGORITHM,
            headers={"typ": typ, "kid": self._active_kid},
        )

    def verify(self, token: object, *, typ: str) -> dict[str, Any]:
        """Check a compact JWS signed by one of the ring's keys; return its JSON payload.

        Only the signature, the algorithm and the header are checked here; claims (times,
        audience...) are the caller's. Any failure is an opaque ``InvalidToken``.
        """
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            raise RejectedToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # hostile input: whatever the parser trips on, the answer is the same
            raise RejectedToken("malformed") from None
        if header.get("alg") != ALGORITHM:
            raise RejectedToken("wrong_alg")
        if not _typ_matches(header.get("typ"), typ):
            raise RejectedToken("wrong_typ")
        if _UNSUPPORTED_HEADERS & header.keys():
            raise RejectedToken("unsupported_header")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise RejectedToken("missing_kid")
        key = self.public_key(kid)
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise RejectedToken("bad_signature") from None
        except Exception:
            raise RejectedToken("malformed") from None
        return payload

    # ----------------------------------------------------------------- internals

    def _scan_public_dir(self) -> None:
        """Add every ``public/<kid>.pem`` not yet known, newest first (by mtime, then kid)."""
        assert self._directory is not None
        found: list[tuple[float, str, Path]] = []
        for path in (self._directory / PUBLIC_DIR).glob("*.pem"):
            kid = path.stem
            if kid in self._public or not _KID.match(kid):
                continue
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime, kid, path))
        found.sort(key=lambda item: (-item[0], item[1]))
        for _, kid, path in found:
            key = _read_public_key(path, kid)
            if key is not None:
                self._public[kid] = key


# --------------------------------------------------------------------- file helpers
