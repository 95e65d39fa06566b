"""DPoP proofs (RFC 9449): an agent proves it holds the private key its credential is bound to.

A proof is a JWT the agent signs with its own key and sends in the ``DPoP`` header. Its header
names ``typ: dpop+jwt``, an asymmetric ``alg`` and the public key (``jwk``); its claims name the
HTTP method (``htm``) and URL (``htu``) it was made for, when (``iat``), a unique ``jti`` and,
beside an access token, ``ath`` (the token's SHA-256). ``verify_proof`` checks all of that and
returns the key's RFC 7638 thumbprint (``jkt``), which a claim writes into the credential's
``cnf``. Replay (a ``jti`` seen before) is the store's job: ``replay_key`` and ``spent_until``.

The ``htu`` a proof may name: the URL the request arrived at (RFC 9449's rule), or the
server's public URL (``STEPUP_PUBLIC_URL``) joined with the request's path, since a proxy in
front of stepup changes the former. Either way the path is the request's own (it names the
request claimed), and a proof is spent on first use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit

import jwt

from core.errors import StepupError

PROOF_TYP = "dpop+jwt"
# Asymmetric only: "none" and the HMAC family would prove nothing about a key pair.
ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
MAX_PROOF_CHARS = 8192
MAX_JTI_CHARS = 128
MAX_AGE = timedelta(minutes=5)  # a proof older than this is stale
FUTURE_SKEW = timedelta(seconds=60)  # the agent's clock may run this far ahead
MIN_RSA_BITS = 2048
# Members that only a private (or symmetric) JWK has: a proof carrying one is refused.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2 (and RFC 8037 for OKP): the members a thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_KEY_FOR_ALG = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidDpopProof(StepupError):
    """A DPoP proof is missing where required, malformed, or does not hold (answered 400,
    RFC 9449's ``invalid_dpop_proof``). Nothing was claimed."""

    title = "Invalid DPoP proof"


@dataclass(frozen=True, slots=True)
class ProofOfPossession:
    """What the edge hands the engine: the ``DPoP`` header and the request it came with."""

    proof: str
    method: str
    urls: tuple[str, ...]  # the URLs ``htu`` may name (the request's, the public one)


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    jkt: str  # RFC 7638 thumbprint of the proof's key
    jti: str
    iat: int

    @property
    def replay_key(self) -> str:
        """What the store remembers: the jti scoped to its key, hashed to a fixed length."""
        return hashlib.sha256(f"{self.jkt}:{self.jti}".encode()).hexdigest()

    @property
    def spent_until(self) -> datetime:
        """Until when the proof would be accepted, so until when its jti must be remembered."""
        return datetime.fromtimestamp(self.iat, tz=UTC) + MAX_AGE + timedelta(seconds=1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace; base64url."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidDpopProof("the proof's jwk is not an EC, OKP or RSA public key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token's ASCII."""
    return b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalise_url(url: str) -> str:
    """The URL as ``htu`` is compared: scheme and host lower-cased, the default port dropped,
    no query or fragment, an empty path as ``/`` (RFC 9449 §4.3, RFC 3986 §6.2.2-6.2.3)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidDpopProof("htu is not a URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidDpopProof("htu is not an http(s) URL")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str | Sequence[str],
    now: datetime,
    access_token: str | None = None,
) -> VerifiedProof:
    """The proof's key thumbprint, if ``proof`` is a DPoP proof for ``method url`` (any of
    them, when several) made now and, when given, for ``access_token``; else InvalidDpopProof
    naming the first check failed."""
    urls = [url] if isinstance(url, str) else list(url)
    if not isinstance(proof, str) or not proof or len(proof) > MAX_PROOF_CHARS:
        raise InvalidDpopProof("the DPoP header is empty or too long")
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise InvalidDpopProof("the DPoP header is not a JWT") from None
    if header.get("typ") != PROOF_TYP:
        raise InvalidDpopProof(f"the proof's typ must be {PROOF_TYP}")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidDpopProof(f"the proof's alg must be one of {', '.join(ALGORITHMS)}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof("the proof's header has no jwk")
    key = _public_key(jwk, str(alg))
    try:
        claims = jwt.decode(
            proof,
            key=key,
            algorithms=[str(alg)],
            options={
                "require": ["jti", "htm", "htu", "iat"],
                "verify_aud": False,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidDpopProof(f"the proof does not verify with its jwk ({_reason(exc)})") from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise InvalidDpopProof(f"jti must be a string of 1 to {MAX_JTI_CHARS} characters")
    if claims.get("htm") != method.upper():
        raise InvalidDpopProof(f"htm must be {method.upper()}")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalise_url(htu) not in {normalise_url(u) for u in urls}:
        raise InvalidDpopProof(f"htu must be {normalise_url(urls[0])}")
    iat = claims.get("iat")
    if not _is_time(iat):
        raise InvalidDpopProof("iat must be a time in seconds (a NumericDate)")
    at = int(now.timestamp())
    if iat > at + FUTURE_SKEW.total_seconds():
        raise InvalidDpopProof("iat is in the future")
    if iat < at - MAX_AGE.total_seconds():
        raise InvalidDpopProof("the proof is stale (iat too old)")
    if access_token is not None and claims.get("ath") != access_token_hash(access_token):
        raise InvalidDpopProof("ath does not match the access token")
    return VerifiedProof(jkt=jwk_thumbprint(jwk), jti=jti, iat=int(iat))


def _public_key(jwk: dict[str, Any], alg: str) -> Any:
    if _PRIVATE_MEMBERS & set(jwk):
        raise InvalidDpopProof("the proof's jwk must be a public key (it holds private members)")
    kty, crv = _KEY_FOR_ALG[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise InvalidDpopProof(f"alg {alg} needs a {kty} key" + (f" on {crv}" if crv else ""))
    jwk_thumbprint(jwk)  # the required members are there, as strings
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise InvalidDpopProof("the proof's jwk is not a valid public key") from None
    if kty == "RSA" and getattr(key, "key_size", 0) < MIN_RSA_BITS:
        raise InvalidDpopProof(f"an RSA key must have at least {MIN_RSA_BITS} bits")
    return key


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reason(exc: Exception) -> str:
    return exc.__class__.__name__
