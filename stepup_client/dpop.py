"""DPoP (RFC 9449) for agents: a key of their own, and the proofs made with it.

The client binds each credential it claims to a per-process key (``process_key``), so a token
that leaks (a log, a prompt cache) is useless without that key. A proof names the HTTP method
and URL it is for, when it was made, a unique ``jti`` and, beside a token, the token's hash
(``ath``); the key's RFC 7638 thumbprint is the token's ``cnf.jkt``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

PROOF_TYP = "dpop+jwt"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token."""
    return b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the key type's required members, sorted, no whitespace."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    required = members.get(str(jwk.get("kty")))
    if required is None or not all(isinstance(jwk.get(m), str) for m in required):
        raise ValueError("not an EC, OKP or RSA public JWK")
    canonical = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def htu_of(url: str) -> str:
    """The URL as a proof names it: scheme and host lower-cased, no default port, no query or
    fragment, an empty path as ``/``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


class DpopKey:
    """An ES256 (P-256) key pair that signs DPoP proofs; the private key never leaves it."""

    algorithm = "ES256"

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self.public_jwk: dict[str, str] = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        self.thumbprint = jwk_thumbprint(self.public_jwk)  # the token's cnf.jkt
        self._clock = clock

    def __repr__(self) -> str:
        return f"DpopKey(jkt={self.thumbprint!r})"

    def proof(self, method: str, url: str, *, access_token: str | None = None) -> str:
        """A fresh proof for one request: ``method url`` (query and fragment dropped), now,
        a new ``jti``, and ``ath`` when it goes with ``access_token``."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": htu_of(url),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        return jwt.encode(
            claims,
            self._key,
            algorithm=self.algorithm,
            headers={"typ": PROOF_TYP, "jwk": self.public_jwk},
        )


_process_lock = threading.Lock()
_process_key: tuple[int, DpopKey] | None = None


def process_key() -> DpopKey:
    """This process's key, made on first use (a forked child makes its own)."""
    global _process_key
    with _process_lock:
        if _process_key is None or _process_key[0] != os.getpid():
            _process_key = (os.getpid(), DpopKey())
        return _process_key[1]
