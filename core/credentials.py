"""Just-in-time credentials: the issuer interface and the built-in JWT issuer
(docs/security-model.md).

A credential is a compact JWS (alg EdDSA, ``typ: at+jwt``, ``kid``) bound to one approved
request: its agent (``sub``), target (``aud``), action (``scope``) and exact arguments
(``args_digest``). The token itself is returned once and never stored or logged; the database
keeps the handle (``jti``), scope and expiry.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from core.keys import KeyRing, RejectedToken

CREDENTIAL_TYP = "at+jwt"  # RFC 9068

REQUIRED_CLAIMS = (
    "iss",
    "sub",
    "aud",
    "scope",
    "exp",
    "iat",
    "nbf",
    "jti",
    "request_id",
    "args_digest",
    "env",
    "approvers",
)
_STRING_CLAIMS = ("iss", "sub", "scope", "jti", "request_id", "args_digest", "env")
_TIME_CLAIMS = ("exp", "iat", "nbf")
_EXTENSION_CLAIMS = (
    "request_id",
    "args_digest",
    "env",
    "approvers",
    "on_behalf_of",
    "cnf",  # RFC 9449: the DPoP key the token is bound to ({"jkt": thumbprint})
    "act",  # RFC 8693: the delegation chain, current actor outermost
    "parent_request_id",
)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


@dataclass(frozen=True)
class CredentialGrant:
    """What an approved request entitles its agent to; the input of every issuer."""

    request_id: str
    agent: str  # sub
    audience: str  # the request's target
    scope: str  # the action
    args_digest: str
    environment: str
    approvers: tuple[str, ...]  # emails
    on_behalf_of: str | None
    ttl: timedelta
    # RFC 9449: bind the token to the agent's DPoP key (its RFC 7638 thumbprint)
    jkt: str | None = None
    # RFC 8693: for a delegated request, ``agent`` is the root agent and these are the actors
    # from the current one back to the first delegate; ``act`` nests them in that order.
    actors: tuple[str, ...] = ()
    parent_request_id: str | None = None

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise ValueError("a credential's ttl must be positive")
        if not isinstance(self.approvers, tuple):
            raise TypeError("approvers must be a tuple of emails")


@dataclass(frozen=True)
class IssuedCredential:
    """The secret (shown to the agent once), its handle for revocation, and its expiry."""

    token: str = field(repr=False)
    handle: str  # the jti for JWTs; a lease id for Vault
    expires_at: datetime  # aware, UTC
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret


class CredentialIssuer(Protocol):
    """Mints a credential for a grant and revokes it by handle (JWT, Vault, an HTTP broker)."""

    def issue(self, grant: CredentialGrant, now: datetime) -> IssuedCredential: ...

    def revoke(self, handle: str, now: datetime) -> None: ...


class JwtIssuer:
    """The built-in issuer: self-contained access tokens signed with the service's key."""

    def __init__(self, keyring: KeyRing, issuer_url: str) -> None:
        if not issuer_url:
            raise ValueError("issuer_url (the service's public URL) is required")
        self._keyring = keyring
        self._issuer_url = issuer_url

    def issue(self, grant: CredentialGrant, now: datetime) -> IssuedCredential:
        _require_aware(now)
        issued_at = int(now.timestamp())
        # Rounded down, so a credential never outlives the ttl it was granted.
        expires = int((now + grant.ttl).timestamp())
        if expires <= issued_at:
            raise ValueError("a credential's ttl must be at least one second")
        jti = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": self._issuer_url,
            "sub": grant.agent,
            "aud": grant.audience,
            "scope": grant.scope,
            "exp": expires,
            "iat": issued_at,
            "nbf": issued_at,
            "jti": jti,
            "request_id": grant.request_id,
            "args_digest": grant.args_digest,
            "env": grant.environment,
            "approvers": list(grant.approvers),
        }
        if grant.on_behalf_of is not None:
            claims["on_behalf_of"] = grant.on_behalf_of
        if grant.jkt is not None:
            claims["cnf"] = {"jkt": grant.jkt}
        if grant.actors:
            claims["act"] = actor_claim(grant.actors)
        if grant.parent_request_id is not None:
            claims["parent_request_id"] = grant.parent_request_id
        return IssuedCredential(
            token=self._keyring.sign(claims, typ=CREDENTIAL_TYP),
            handle=jti,
            expires_at=datetime.fromtimestamp(expires, UTC),
            scope=grant.scope,
            token_type="DPoP" if grant.jkt is not None else "Bearer",
        )

    def revoke(self, handle: str, now: datetime) -> None:
        """Nothing to do here: a JWT cannot be recalled once handed out.

        Revocation is the ``jti`` entering the database's revocation list (kept by the storage
        layer in the same transaction as the status change); introspection consults that list,
        and the short ``exp`` bounds how long a target that only checks signatures may accept it.
        """

    def revocation_is_the_list(self) -> bool:
        """True: revoking is the jti entering the revocation list, so the revocation is
        settled in the transaction that ends the session (no later pass). A subclass that
        overrides ``revoke`` has work to do there, and is called by the revocation pass."""
        return type(self).revoke is JwtIssuer.revoke


def actor_claim(actors: tuple[str, ...]) -> dict[str, Any]:
    """RFC 8693 ``act``: ``{"sub": current, "act": {"sub": the one before, …}}``."""
    claim: dict[str, Any] = {"sub": actors[-1]}
    for actor in reversed(actors[:-1]):
        claim = {"sub": actor, "act": claim}
    return claim


def verify_credential(
    token: str,
    *,
    keyring: KeyRing,
    issuer_url: str,
    audience: str | None,
    now: datetime,
    leeway: timedelta | float = 0,
) -> dict[str, Any]:
    """The claims of a valid credential issued by us, at ``now``; else ``InvalidToken``.

    ``audience=None`` skips the audience check (introspection answers for any target).
    Revocation is not checked here: that needs the database.
    """
    _require_aware(now)
    slack = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
    claims = keyring.verify(token, typ=CREDENTIAL_TYP, now=now)  # its key still in the JWKS
    if any(name not in claims for name in REQUIRED_CLAIMS):
        raise RejectedToken("missing_claim")
    if any(not isinstance(claims[name], str) for name in _STRING_CLAIMS):
        raise RejectedToken("malformed_claim")
    if any(not _is_number(claims[name]) for name in _TIME_CLAIMS):
        raise RejectedToken("malformed_claim")
    approvers = claims["approvers"]
    if not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers):
        raise RejectedToken("malformed_claim")
    if "on_behalf_of" in claims and not isinstance(claims["on_behalf_of"], str):
        raise RejectedToken("malformed_claim")
    if claims["iss"] != issuer_url:
        raise RejectedToken("wrong_issuer")
    if audience is not None and audience not in _audiences(claims["aud"]):
        raise RejectedToken("wrong_audience")
    at = now.timestamp()
    if at >= claims["exp"] + slack:
        raise RejectedToken("expired")
    if at + slack < claims["nbf"]:
        raise RejectedToken("not_yet_valid")
    if at + slack < claims["iat"]:
        raise RejectedToken("issued_in_future")
    return claims


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _audiences(aud: object) -> list[str]:
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return aud
    raise RejectedToken("malformed_claim")


def introspection_response(
    claims: dict[str, Any] | None, *, revoked: bool, now: datetime
) -> dict[str, Any]:
    """The RFC 7662 answer for claims from ``verify_credential`` (None when that failed).

    An inactive token gets ``{"active": false}`` and nothing else, so a probe learns nothing
    about why (RFC 7662 §2.2).
    """
    _require_aware(now)
    if claims is None or revoked:
        return {"active": False}
    at = now.timestamp()
    if at >= claims["exp"] or at < claims["nbf"]:
        return {"active": False}
    body: dict[str, Any] = {
        "active": True,
        "scope": claims["scope"],
        "client_id": claims["sub"],
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "jti": claims["jti"],
        "token_type": "DPoP" if isinstance(claims.get("cnf"), dict) else "Bearer",
    }
    body.update({name: claims[name] for name in _EXTENSION_CLAIMS if name in claims})
    return body


def revocation_is_the_list(issuer: object) -> bool:
    """Whether revoking ``issuer``'s credentials is their entering the revocation list alone
    (the built-in ``JwtIssuer``), so that ending a session leaves no later pass to do."""
    check = getattr(issuer, "revocation_is_the_list", None)
    return bool(check()) if callable(check) else False
