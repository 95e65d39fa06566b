"""Workload tokens: a JWT from a trusted issuer authenticates the agent bound to its subject.

Checked, in this order, each failure the same ``Unauthenticated`` a bad agent key gets: the
shape; the algorithm (asymmetric only: never ``none`` nor ``HS*``, whose "secret" would be a
public key); the trusted issuer (an OIDC token by its exact ``iss``, a JWT-SVID by the trust
domain of its SPIFFE ID ``sub``); the key named by ``kid`` (refreshed if unknown, see
``core/identity/jwks.py``) and that it fits the algorithm; the signature; ``exp`` (required)
and ``nbf`` with ``SKEW``; ``aud`` containing the trusted audience; ``sub``. The binding of
(trust, subject) to an agent is looked up by the caller, in the transaction of its work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from core.errors import Unauthenticated
from core.identity.jwks import DEFAULT_FLOOR, DEFAULT_MAX_AGE, Fetcher, KeyCache, fetch_json
from core.identity.trust import TrustedIssuer, TrustKind, spiffe_trust_domain

logger = logging.getLogger(__name__)

# The asymmetric algorithms of RFC 7518 that JWT-SVIDs may use, and EdDSA (RFC 8037).
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SKEW = timedelta(seconds=60)  # clock difference tolerated on exp and nbf
MAX_TOKEN = 16 * 1024
MAX_SPONSORS = 20
MAX_VERIFIED = 4096  # tokens remembered as verified (each is presented many times)
SPONSOR_CLAIM = "on_behalf_of"  # the person the workload acts for, as its issuer states it
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_VERIFIERS = {name: get_default_algorithms()[name] for name in ALGORITHMS}


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts, and not an agent key (``stpa_…``)."""
    return not token.startswith("stpa_") and len(token) <= MAX_TOKEN and bool(_JWT.match(token))


@dataclass(frozen=True, slots=True)
class VerifiedWorkload:
    """A workload token that passed every check but the binding."""

    trust: str  # the trusted issuer's name (a SPIFFE trust domain for a JWT-SVID)
    subject: str
    label: str  # oidc:NAME or spiffe
    sponsors: frozenset[str] = frozenset()  # from its on_behalf_of claim, lower case


class TrustSource(Protocol):
    def __call__(self) -> Sequence[TrustedIssuer]:
        """Every trusted issuer, as stored now."""
        ...


def _nothing() -> Sequence[TrustedIssuer]:
    return ()


class _Refused(Exception):
    """Why a token was refused: logged, never shown to the caller."""


class WorkloadVerifier:
    """Verifies workload tokens against the trusted issuers of ``source``, which it reads
    again every ``reload_seconds`` and on an unknown issuer (at most every ``miss_floor``
    seconds). Thread-safe."""

    def __init__(
        self,
        source: TrustSource = _nothing,
        *,
        fetch: Fetcher = fetch_json,
        clock: Callable[[], float] = time.monotonic,
        floor: float = DEFAULT_FLOOR,
        max_age: float = DEFAULT_MAX_AGE,
        reload_seconds: float = 5.0,
        miss_floor: float = 1.0,
    ) -> None:
        self._source = source
        self._fetch = fetch
        self._clock = clock
        self.floor = floor
        self.max_age = max_age
        self.reload_seconds = reload_seconds
        self.miss_floor = miss_floor
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._caches: dict[str, KeyCache] = {}
        self._oidc: dict[str, KeyCache] = {}  # by exact iss
        self._spiffe: dict[str, KeyCache] = {}  # by trust domain
        self._verified: dict[bytes, _Seen] = {}  # by the token's SHA-256, oldest first

    # -- trusted issuers --------------------------------------------------------------------

    def reload(self) -> None:
        """Read the trusted issuers now (after ``stepup trust`` in this process)."""
        with self._lock:
            self._load_locked()

    def cache(self, name: str) -> KeyCache | None:
        return self._caches.get(name)

    def _load_locked(self) -> None:
        trusted = list(self._source())
        caches: dict[str, KeyCache] = {}
        for item in trusted:
            old = self._caches.get(item.name)
            caches[item.name] = (
                old
                if old is not None and old.trusted == item
                else KeyCache(
                    item,
                    fetch=self._fetch,
                    clock=self._clock,
                    floor=self.floor,
                    max_age=self.max_age,
                )
            )
        self._caches = caches
        self._oidc = {
            c.trusted.issuer: c for c in caches.values() if c.trusted.kind is TrustKind.OIDC
        }
        self._spiffe = {
            c.trusted.name: c for c in caches.values() if c.trusted.kind is TrustKind.SPIFFE
        }
        self._loaded_at = self._clock()

    def _maybe_reload(self, *, miss: bool) -> bool:
        loaded_at = self._loaded_at
        age = None if loaded_at is None else self._clock() - loaded_at
        due = age is None or age >= (self.miss_floor if miss else self.reload_seconds)
        if not due:
            return False
        if loaded_at is None or miss:
            with self._lock:
                if self._loaded_at == loaded_at:
                    self._load_locked()
            return True
        if self._lock.acquire(blocking=False):  # another thread reloading: use what we have
            try:
                self._load_locked()
            finally:
                self._lock.release()
        return True

    def _issuer_of(self, claims: dict[str, Any]) -> KeyCache:
        self._maybe_reload(miss=False)
        found = self._lookup(claims)
        if found is None and self._maybe_reload(miss=True):
            found = self._lookup(claims)
        if found is None:
            raise _Refused("no trusted issuer")
        return found

    def _lookup(self, claims: dict[str, Any]) -> KeyCache | None:
        iss, sub = claims.get("iss"), claims.get("sub")
        if isinstance(iss, str) and iss in self._oidc:
            return self._oidc[iss]
        if isinstance(sub, str):
            domain = spiffe_trust_domain(sub)
            if domain is not None:
                return self._spiffe.get(domain)
        return None

    # -- tokens -----------------------------------------------------------------------------

    def verify(self, token: str, *, now: datetime) -> VerifiedWorkload:
        """The token's workload, or Unauthenticated (the reason is logged, not returned)."""
        try:
            return self._verify(token, now)
        except _Refused as exc:
            logger.info("workload token refused: %s", exc)
            raise Unauthenticated() from None

    def _verify(self, token: str, now: datetime) -> VerifiedWorkload:
        if not looks_like_jwt(token):
            raise _Refused("not a JWT")
        self._maybe_reload(miss=False)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        seen = self._verified.get(digest)
        if seen is not None and seen.still_holds(self._caches):
            _check_times(seen.times, now)
            return seen.workload
        head, body, signature = token.split(".")
        header, claims = _json_part(head), _json_part(body)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise _Refused(f"algorithm {str(alg)[:20]!r} not allowed")
        if not isinstance(kid, str):
            raise _Refused("no kid")
        if "crit" in header:
            raise _Refused("crit header parameters are not understood")  # RFC 7515 §4.1.11
        cache = self._issuer_of(claims)
        trusted = cache.trusted
        if trusted.kind is TrustKind.SPIFFE and header.get("typ", "JWT") not in {"JWT", "JOSE"}:
            raise _Refused("typ")  # the SPIFFE JWT-SVID spec: JWT or JOSE when present
        key = cache.key(kid)
        if key is None:
            raise _Refused(f"trust {trusted.name}: unknown kid")
        _check_key_fits(key, str(alg))
        signed = f"{head}.{body}".encode("ascii")
        if not _VERIFIERS[str(alg)].verify(signed, key.key, _signature(signature)):
            raise _Refused(f"trust {trusted.name}: bad signature")
        _check_times(claims, now)
        _check_audience(claims, trusted.audience)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 512:
            raise _Refused("no sub")
        if trusted.kind is TrustKind.OIDC:
            if claims.get("iss") != trusted.issuer:
                raise _Refused("iss")
        elif spiffe_trust_domain(subject) != trusted.name:
            raise _Refused("sub is not a SPIFFE ID of the trust domain")
        workload = VerifiedWorkload(
            trust=trusted.name,
            subject=subject,
            label=trusted.label,
            sponsors=_sponsors(claims.get(SPONSOR_CLAIM)),
        )
        times: dict[str, Any] = {k: claims[k] for k in ("exp", "nbf", "iat") if k in claims}
        self._remember(digest, _Seen(workload, cache, kid, key, times))
        return workload

    def _remember(self, digest: bytes, seen: _Seen) -> None:
        with self._lock:
            while len(self._verified) >= MAX_VERIFIED:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[digest] = seen


@dataclass(frozen=True, slots=True)
class _Seen:
    """A token verified before: presented again, only its times are checked again, as long as
    its issuer is trusted as it was and its key is still among the issuer's current keys."""

    workload: VerifiedWorkload
    cache: KeyCache
    kid: str
    key: jwt.PyJWK
    times: dict[str, Any]

    def still_holds(self, caches: dict[str, KeyCache]) -> bool:
        return caches.get(self.workload.trust) is self.cache and self.cache.current(self.kid) is (
            self.key
        )


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _signature(part: str) -> bytes:
    try:
        return _b64(part)
    except ValueError:  # binascii.Error: not base64url
        raise _Refused("malformed signature") from None


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(part))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…"
        raise _Refused("malformed") from None
    if not isinstance(value, dict):
        raise _Refused("malformed")
    return value


def _check_key_fits(key: jwt.PyJWK, alg: str) -> None:
    declared = key._jwk_data.get("alg")
    if declared is not None and declared != alg:
        raise _Refused("the key is for another algorithm")
    material = key.key
    if alg[:2] in {"RS", "PS"}:
        fits = isinstance(material, rsa.RSAPublicKey)
    elif alg in _CURVES:
        fits = isinstance(material, ec.EllipticCurvePublicKey) and isinstance(
            material.curve, _CURVES[alg]
        )
    else:
        fits = isinstance(material, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    if not fits:
        raise _Refused("the key does not fit the algorithm")


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{name} is not a number")
    if not math.isfinite(value):  # JSON's 1e999 reads as infinity: a token that never expires
        raise _Refused(f"{name} is not a finite number")
    return float(value)


def _check_times(claims: dict[str, Any], now: datetime) -> None:
    moment = now.timestamp()
    skew = SKEW.total_seconds()
    exp = _number(claims, "exp")
    if exp is None:
        raise _Refused("no exp")
    if moment >= exp + skew:
        raise _Refused("expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and moment < nbf - skew:
        raise _Refused("not yet valid")
    iat = _number(claims, "iat")
    if iat is not None and moment < iat - skew:
        raise _Refused("issued in the future")


def _check_audience(claims: dict[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    audiences: Iterable[Any] = (
        [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    )
    if audience not in audiences:
        raise _Refused("audience")


def _sponsors(value: Any) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    found = {v.strip().lower() for v in values[:MAX_SPONSORS] if isinstance(v, str) and v.strip()}
    return frozenset(found)
