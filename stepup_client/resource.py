"""For target systems: check a stepup credential an agent presents, before doing what it allows.

``PresentedCredentialVerifier`` checks, offline against stepup's JWKS: the signature (EdDSA,
by ``kid``) and ``typ``, ``iss``, ``aud``, ``exp``/``nbf``, that ``scope`` is the action about
to be done and ``args_digest`` the digest of the arguments about to be used, and, for a token
bound to the agent's key (``cnf.jkt``), the DPoP proof that must come with it: ``htm``,
``htu``, ``iat``, ``ath``, the key's thumbprint, and a ``jti`` not seen within the window.

Revocation is not visible offline: call stepup's ``/v1/introspect`` as well where an
approver's revocation must stop the action at once (docs/dpop.md).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from stepup_client.digest import parameters_digest
from stepup_client.dpop import PROOF_TYP, access_token_hash, htu_of, jwk_thumbprint
from stepup_client.errors import StepupClientError

CREDENTIAL_TYP = "at+jwt"
CREDENTIAL_ALGORITHMS = ("EdDSA",)
PROOF_ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
MAX_TOKEN_CHARS = 16384
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_FOR_ALG = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}


class PresentedCredentialError(StepupClientError):
    """The presented credential must not be honoured; ``str(error)`` says why (for your log,
    not for the caller). ``www_authenticate`` is a suitable header for a 401 answer."""

    error = "invalid_token"

    @property
    def www_authenticate(self) -> str:
        return f'DPoP error="{self.error}", Bearer error="{self.error}"'


class InvalidCredential(PresentedCredentialError):
    """Malformed, not signed by stepup, another issuer's or audience's, expired or not yet valid."""


class ScopeMismatch(PresentedCredentialError):
    """The credential approves another action than the one about to be done."""

    error = "insufficient_scope"


class ArgumentsMismatch(PresentedCredentialError):
    """The credential approves other arguments than the ones about to be used."""

    error = "insufficient_scope"


class DpopProofRequired(PresentedCredentialError):
    """The token is bound to a key (``cnf.jkt``) and came without a ``DPoP`` proof."""

    error = "invalid_dpop_proof"


class InvalidPresentedProof(PresentedCredentialError):
    """The ``DPoP`` proof is malformed, signed by another key, or for another call or time."""

    error = "invalid_dpop_proof"


class ReplayedProof(InvalidPresentedProof):
    """This ``DPoP`` proof was presented before (within the window)."""


class PresentedCredentialVerifier:
    """Verifies presented credentials for one target system; keep one per process, since it
    holds the replay cache (bounded, in memory: with several replicas, route an agent's calls
    to one, or share a cache by subclassing ``_spend``).

    ``jwks``: stepup's JWKS as a dict, or its URL (``{STEPUP}/.well-known/jwks.json``), fetched
    on first use, cached, and fetched again for an unknown ``kid``.
    """

    def __init__(
        self,
        *,
        jwks: Mapping[str, Any] | str,
        issuer: str,
        audience: str,
        proof_max_age: float = 300.0,
        proof_future_skew: float = 60.0,
        leeway: float = 5.0,
        replay_cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(jwks, str):
            self._client: jwt.PyJWKClient | None = jwt.PyJWKClient(jwks, lifespan=300)
            self._keys: jwt.PyJWKSet | None = None
        else:
            self._client = None
            self._keys = jwt.PyJWKSet.from_dict(dict(jwks))
        self.issuer = issuer
        self.audience = audience
        self.proof_max_age = proof_max_age
        self.proof_future_skew = proof_future_skew
        self.leeway = leeway
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # jkt:jti -> until
        self._capacity = replay_cache_size
        self._lock = threading.Lock()

    def verify(
        self,
        authorization: str,
        dpop: str | None,
        *,
        method: str,
        url: str,
        scope: str,
        arguments: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The credential's claims, if it may be honoured for ``method url`` doing ``scope``
        with ``arguments``; else a ``PresentedCredentialError`` subclass naming the reason."""
        now = self._clock()
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "dpop") or not token:
            raise InvalidCredential("expected Authorization: DPoP <token> (or Bearer <token>)")
        claims = self._token_claims(token, now)
        if claims.get("scope") != scope:
            raise ScopeMismatch(f"the credential approves {claims.get('scope')!r}, not {scope!r}")
        if claims.get("args_digest") != parameters_digest(dict(arguments)):
            raise ArgumentsMismatch("the credential approves other arguments")
        cnf = claims.get("cnf")
        if cnf is None:
            if scheme.lower() == "dpop":
                raise InvalidCredential("Authorization: DPoP with a token bound to no key")
            return claims
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not isinstance(jkt, str):
            raise InvalidCredential("the token's cnf is malformed")
        if dpop is None:
            raise DpopProofRequired("the token is bound to a key: a DPoP proof is required")
        if scheme.lower() != "dpop":
            raise DpopProofRequired("a key-bound token is presented as Authorization: DPoP")
        self._check_proof(dpop, jkt=jkt, token=token, method=method, url=url, now=now)
        return claims

    # -- the token -------------------------------------------------------------------------

    def _token_claims(self, token: str, now: float) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidCredential("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidCredential("the token is not a JWT") from None
        if header.get("typ") != CREDENTIAL_TYP or header.get("alg") not in CREDENTIAL_ALGORITHMS:
            raise InvalidCredential("the token is not a stepup credential (typ, alg)")
        key = self._signing_key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(CREDENTIAL_ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidCredential(f"the token does not verify ({exc})") from None
        # PyJWT checked exp/nbf against its own clock; hold them to ours too.
        if not (claims["nbf"] - self.leeway <= now < claims["exp"] + self.leeway):
            raise InvalidCredential("the token is expired or not yet valid")
        return claims

    def _signing_key(self, kid: object) -> Any:
        if not isinstance(kid, str) or not kid:
            raise InvalidCredential("the token names no kid")
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid).key
            except jwt.PyJWKClientError as exc:
                raise InvalidCredential(f"no stepup key {kid!r} ({exc})") from None
        assert self._keys is not None
        for key in self._keys.keys:
            if key.key_id == kid:
                return key.key
        raise InvalidCredential(f"no stepup key {kid!r}")

    # -- the proof -------------------------------------------------------------------------

    def _check_proof(
        self, proof: str, *, jkt: str, token: str, method: str, url: str, now: float
    ) -> None:
        if not proof or len(proof) > 8192:
            raise InvalidPresentedProof("the DPoP header is empty or too long")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise InvalidPresentedProof("the DPoP header is not a JWT") from None
        alg = header.get("alg")
        jwk = header.get("jwk")
        if header.get("typ") != PROOF_TYP or alg not in PROOF_ALGORITHMS:
            raise InvalidPresentedProof("the proof's typ or alg is not allowed")
        if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & set(jwk):
            raise InvalidPresentedProof("the proof's jwk is missing or not a public key")
        kty, crv = _KEY_FOR_ALG[str(alg)]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise InvalidPresentedProof("the proof's jwk does not fit its alg")
        try:
            if jwk_thumbprint(jwk) != jkt:
                raise InvalidPresentedProof("the proof is signed by another key than the token's")
            key = jwt.PyJWK(jwk, algorithm=str(alg)).key
            claims = jwt.decode(
                proof,
                key=key,
                algorithms=[str(alg)],
                options={
                    "require": ["jti", "htm", "htu", "iat"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise InvalidPresentedProof(f"the proof does not verify with its jwk ({exc})") from None
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise InvalidPresentedProof("jti must be a string of 1 to 128 characters")
        if claims.get("htm") != method.upper():
            raise InvalidPresentedProof(f"the proof is for {claims.get('htm')!r}, not {method}")
        try:
            same_url = htu_of(str(claims.get("htu"))) == htu_of(url)
        except ValueError:
            same_url = False
        if not same_url:
            raise InvalidPresentedProof(f"the proof is for another URL than {htu_of(url)}")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or not math.isfinite(iat):
            raise InvalidPresentedProof("iat must be a time in seconds (a NumericDate)")
        if iat > now + self.proof_future_skew or iat < now - self.proof_max_age:
            raise InvalidPresentedProof("the proof is stale or from the future (iat)")
        if claims.get("ath") != access_token_hash(token):
            raise InvalidPresentedProof("the proof's ath is not the presented token's hash")
        self._spend(f"{jkt}:{jti}", until=iat + self.proof_max_age, now=now)

    def _spend(self, key: str, *, until: float, now: float) -> None:
        """Remember a proof until it would be stale anyway; ReplayedProof if remembered."""
        with self._lock:
            seen = self._seen
            for _ in range(len(seen)):  # drop the stale ones at the old end (bounded)
                oldest = next(iter(seen))
                if seen[oldest] >= now:
                    break
                del seen[oldest]
            if key in seen and seen[key] >= now:
                raise ReplayedProof("this DPoP proof was already presented")
            seen[key] = until
            seen.move_to_end(key)
            while len(seen) > self._capacity:
                seen.popitem(last=False)


def verify_presented(
    authorization: str,
    dpop: str | None,
    *,
    method: str,
    url: str,
    jwks: Mapping[str, Any] | str,
    issuer: str,
    audience: str,
    scope: str,
    arguments: Mapping[str, Any],
) -> dict[str, Any]:
    """``PresentedCredentialVerifier(...).verify(...)`` with one verifier kept per (JWKS,
    issuer, audience) in this process, so its keys and its replay cache span calls."""
    verifier = _verifier(jwks, issuer, audience)
    return verifier.verify(
        authorization, dpop, method=method, url=url, scope=scope, arguments=arguments
    )


_verifiers: dict[tuple[str, str, str], PresentedCredentialVerifier] = {}
_verifiers_lock = threading.Lock()
_MAX_VERIFIERS = 16


def _verifier(
    jwks: Mapping[str, Any] | str, issuer: str, audience: str
) -> PresentedCredentialVerifier:
    """The process's verifier for these settings (a few at most: the oldest is dropped past
    ``_MAX_VERIFIERS``)."""
    source = jwks if isinstance(jwks, str) else json.dumps(jwks, sort_keys=True, default=str)
    with _verifiers_lock:
        key = (source, issuer, audience)
        if key not in _verifiers:
            if len(_verifiers) >= _MAX_VERIFIERS:
                del _verifiers[next(iter(_verifiers))]
            _verifiers[key] = PresentedCredentialVerifier(
                jwks=jwks, issuer=issuer, audience=audience
            )
        return _verifiers[key]
