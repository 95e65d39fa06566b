"""The built-in JWT issuer (core/credentials.py): claims, lifetime, verification, introspection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.credentials import (
    CredentialGrant,
    IssuedCredential,
    JwtIssuer,
    introspection_response,
    verify_credential,
)
from core.errors import InvalidToken
from core.keys import KeyRing, RejectedToken

ISSUER = "https://stepup.example.com"
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
DIGEST = "sha256:" + "ab" * 32


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(value: Any) -> str:
    return _b64url(json.dumps(value).encode())


def _json_part(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return _json_part(header), _json_part(payload)


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


@pytest.fixture
def issuer(ring: KeyRing) -> JwtIssuer:
    return JwtIssuer(ring, ISSUER)


def _grant(**changes: Any) -> CredentialGrant:
    values: dict[str, Any] = {
        "request_id": "req_01",
        "agent": "agent-deployer",
        "audience": "postgres://prod-db-1",
        "scope": "db.migrate",
        "args_digest": DIGEST,
        "environment": "production",
        "approvers": ("alice@example.com", "bob@example.com"),
        "on_behalf_of": "carol@example.com",
        "ttl": TTL,
    }
    values.update(changes)
    return CredentialGrant(**values)


def _verify(token: str, ring: KeyRing, **changes: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "keyring": ring,
        "issuer_url": ISSUER,
        "audience": "postgres://prod-db-1",
        "now": NOW,
    }
    kwargs.update(changes)
    return verify_credential(token, **kwargs)


# ----------------------------------------------------------------------------- issuing


def test_token_verifies_with_pyjwt_against_the_jwks_and_carries_every_claim(
    ring: KeyRing, issuer: JwtIssuer
) -> None:
    # PyJWT checks exp/nbf/iat against the wall clock, so mint at the real current second.
    now = datetime.now(UTC).replace(microsecond=0)
    issued = issuer.issue(_grant(), now)

    jwks = jwt.PyJWKSet.from_dict(json.loads(json.dumps(ring.jwks())))
    header = jwt.get_unverified_header(issued.token)
    complete = jwt.decode_complete(
        issued.token,
        jwks[header["kid"]],
        algorithms=["EdDSA"],
        audience="postgres://prod-db-1",
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )

    assert complete["header"] == {"alg": "EdDSA", "typ": "at+jwt", "kid": ring.active_kid}
    stamp = int(now.timestamp())
    assert complete["payload"] == {
        "iss": ISSUER,
        "sub": "agent-deployer",
        "aud": "postgres://prod-db-1",
        "scope": "db.migrate",
        "exp": stamp + 600,
        "iat": stamp,
        "nbf": stamp,
        "jti": issued.handle,
        "request_id": "req_01",
        "args_digest": DIGEST,
        "env": "production",
        "approvers": ["alice@example.com", "bob@example.com"],
        "on_behalf_of": "carol@example.com",
    }


def test_issued_credential_reports_expiry_scope_and_bearer(issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)

    assert issued.expires_at == NOW + TTL
    assert issued.expires_at.tzinfo is not None
    assert issued.scope == "db.migrate"
    assert issued.token_type == "Bearer"
    assert _parts(issued.token)[1]["jti"] == issued.handle


def test_on_behalf_of_is_absent_when_not_given(issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(on_behalf_of=None), NOW)

    assert "on_behalf_of" not in _parts(issued.token)[1]


def test_every_credential_gets_its_own_jti(issuer: JwtIssuer) -> None:
    handles = {issuer.issue(_grant(), NOW).handle for _ in range(20)}

    assert len(handles) == 20


def test_ttl_is_respected_to_the_second(ring: KeyRing, issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(ttl=timedelta(seconds=90)), NOW)
    claims = _parts(issued.token)[1]

    assert claims["exp"] - claims["iat"] == 90
    assert _verify(issued.token, ring, now=NOW + timedelta(seconds=89))["jti"] == issued.handle
    with pytest.raises(InvalidToken):
        _verify(issued.token, ring, now=NOW + timedelta(seconds=90))


def test_fractional_now_never_lengthens_the_lifetime(issuer: JwtIssuer) -> None:
    now = NOW + timedelta(microseconds=999_999)
    issued = issuer.issue(_grant(ttl=timedelta(seconds=60)), now)

    assert issued.expires_at <= now + timedelta(seconds=60)
    assert _parts(issued.token)[1]["exp"] == int(NOW.timestamp()) + 60


def test_repr_of_an_issued_credential_hides_the_token(issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)

    assert issued.token not in repr(issued)
    assert issued.token not in str(issued)
    assert issued.handle in repr(issued)
    assert isinstance(issued, IssuedCredential)


def test_grant_with_non_positive_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        _grant(ttl=timedelta(0))


def test_naive_now_is_a_programming_error(issuer: JwtIssuer) -> None:
    with pytest.raises(ValueError, match="timezone"):
        issuer.issue(_grant(), NOW.replace(tzinfo=None))


# ----------------------------------------------------------------------------- verifying


def test_verify_returns_the_claims(ring: KeyRing, issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)

    claims = _verify(issued.token, ring)

    assert claims["sub"] == "agent-deployer"
    assert claims["scope"] == "db.migrate"
    assert claims["args_digest"] == DIGEST


def test_audience_none_skips_the_audience_check(ring: KeyRing, issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)

    assert _verify(issued.token, ring, audience=None)["aud"] == "postgres://prod-db-1"


def test_leeway_tolerates_small_clock_skew(ring: KeyRing, issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)
    late = NOW + TTL + timedelta(seconds=5)

    assert _verify(issued.token, ring, now=late, leeway=10)["jti"] == issued.handle
    with pytest.raises(InvalidToken):
        _verify(issued.token, ring, now=late)


def _forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64url_json(header)}.{_b64url_json(payload)}.{_b64url(signature)}"


def _hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64url_json(header)}.{_b64url_json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def _ed25519(header: dict[str, Any], payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    signing_input = f"{_b64url_json(header)}.{_b64url_json(payload)}"
    return f"{signing_input}.{_b64url(key.sign(signing_input.encode()))}"


def _rejections(ring: KeyRing, issuer: JwtIssuer) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each case: a token and the verify arguments under which it must be refused."""
    good = issuer.issue(_grant(), NOW).token
    header, claims = _parts(good)
    raw_public = ring.private_key.public_key().public_bytes_raw()
    pem_public = ring.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    foreign = Ed25519PrivateKey.generate()
    head, _, sig = good.split(".")
    missing_digest = {k: v for k, v in claims.items() if k != "args_digest"}
    return {
        "wrong audience": (good, {"audience": "postgres://staging-db"}),
        "wrong issuer": (good, {"issuer_url": "https://evil.example.com"}),
        "expired": (good, {"now": NOW + TTL + timedelta(seconds=1)}),
        "not yet valid": (good, {"now": NOW - timedelta(seconds=1)}),
        "foreign key, same kid": (
            jwt.encode(claims, foreign, algorithm="EdDSA", headers=header),
            {},
        ),
        "alg none": (_forge({**header, "alg": "none"}, claims), {}),
        "alg none, real signature kept": (
            _forge({**header, "alg": "none"}, claims, base64.urlsafe_b64decode(sig + "==")),
            {},
        ),
        "HS256 with raw public key": (_hs256({**header, "alg": "HS256"}, claims, raw_public), {}),
        "HS256 with PEM public key": (_hs256({**header, "alg": "HS256"}, claims, pem_public), {}),
        "tampered payload": (f"{head}.{_b64url_json({**claims, 'scope': 'db.drop'})}.{sig}", {}),
        "wrong typ": (ring.sign(claims, typ="stepup-decision+jwt"), {}),
        "no typ": (
            jwt.encode(
                claims, ring.private_key, algorithm="EdDSA", headers={"kid": ring.active_kid}
            ),
            {},
        ),
        "missing required claim": (ring.sign(missing_digest, typ="at+jwt"), {}),
        "approvers not a list": (ring.sign({**claims, "approvers": "alice"}, typ="at+jwt"), {}),
        "exp not a number": (ring.sign({**claims, "exp": "later"}, typ="at+jwt"), {}),
        "crit header": (
            _ed25519({**header, "crit": ["b64"], "b64": True}, claims, ring.private_key),
            {},
        ),
        "unknown kid": (
            jwt.encode(claims, foreign, algorithm="EdDSA", headers={**header, "kid": "nope"}),
            {},
        ),
        "no kid": (
            jwt.encode(claims, ring.private_key, algorithm="EdDSA", headers={"typ": "at+jwt"}),
            {},
        ),
        "garbage": ("not a token", {}),
        "empty": ("", {}),
        "three dots of garbage": ("a.b.c", {}),
        "huge": ("a" * 100_000, {}),
    }


# Each case, and the log-safe reason it must be refused for (so it fails on the right check).
CASES = {
    "wrong audience": "wrong_audience",
    "wrong issuer": "wrong_issuer",
    "expired": "expired",
    "not yet valid": "not_yet_valid",
    "foreign key, same kid": "bad_signature",
    "alg none": "wrong_alg",
    "alg none, real signature kept": "wrong_alg",
    "HS256 with raw public key": "wrong_alg",
    "HS256 with PEM public key": "wrong_alg",
    "tampered payload": "bad_signature",
    "wrong typ": "wrong_typ",
    "no typ": "wrong_typ",
    "missing required claim": "missing_claim",
    "approvers not a list": "malformed_claim",
    "exp not a number": "malformed_claim",
    "crit header": "unsupported_header",
    "unknown kid": "unknown_kid",
    "no kid": "missing_kid",
    "garbage": "malformed",
    "empty": "malformed",
    "three dots of garbage": "malformed",
    "huge": "malformed",
}


def test_the_rejection_cases_are_all_listed(ring: KeyRing, issuer: JwtIssuer) -> None:
    assert sorted(_rejections(ring, issuer)) == sorted(CASES)


@pytest.mark.parametrize(("case", "reason"), CASES.items())
def test_bad_tokens_are_one_opaque_invalid_token(
    ring: KeyRing, issuer: JwtIssuer, case: str, reason: str
) -> None:
    token, changes = _rejections(ring, issuer)[case]

    with pytest.raises(InvalidToken) as excinfo:
        _verify(token, ring, **changes)
    error = excinfo.value
    assert isinstance(error, RejectedToken)
    assert error.reason == reason
    assert str(error) == "invalid token"
    # No chained parser error that a traceback in a log could spill token contents from.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_the_good_token_behind_the_rejections_does_verify(ring: KeyRing, issuer: JwtIssuer) -> None:
    # Control for the cases above: the unmodified token passes the same checks.
    token = issuer.issue(_grant(), NOW).token
    assert _verify(token, ring)["jti"] == _parts(token)[1]["jti"]


def test_non_string_token_is_an_invalid_token(ring: KeyRing) -> None:
    with pytest.raises(InvalidToken):
        _verify(None, ring)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- rotation


def test_tokens_minted_before_rotation_still_verify_and_new_ones_use_the_new_kid(
    ring: KeyRing, issuer: JwtIssuer
) -> None:
    before = issuer.issue(_grant(), NOW).token
    old_kid = ring.active_kid

    new_kid = ring.rotate()
    after = issuer.issue(_grant(), NOW).token

    assert _parts(before)[0]["kid"] == old_kid
    assert _parts(after)[0]["kid"] == new_kid != old_kid
    assert _verify(before, ring)["request_id"] == "req_01"
    assert _verify(after, ring)["request_id"] == "req_01"
    jwks = jwt.PyJWKSet.from_dict(ring.jwks())
    for token in (before, after):
        claims = jwt.decode(
            token,
            jwks[_parts(token)[0]["kid"]],
            algorithms=["EdDSA"],
            audience="postgres://prod-db-1",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["sub"] == "agent-deployer"


# ----------------------------------------------------------------------------- introspection


def test_introspection_of_a_live_token(ring: KeyRing, issuer: JwtIssuer) -> None:
    issued = issuer.issue(_grant(), NOW)
    claims = _verify(issued.token, ring, audience=None)
    stamp = int(NOW.timestamp())

    body = introspection_response(claims, revoked=False, now=NOW + timedelta(minutes=1))

    assert body == {
        "active": True,
        "scope": "db.migrate",
        "client_id": "agent-deployer",
        "sub": "agent-deployer",
        "aud": "postgres://prod-db-1",
        "iss": ISSUER,
        "exp": stamp + 600,
        "iat": stamp,
        "nbf": stamp,
        "jti": issued.handle,
        "token_type": "Bearer",
        "request_id": "req_01",
        "args_digest": DIGEST,
        "env": "production",
        "approvers": ["alice@example.com", "bob@example.com"],
        "on_behalf_of": "carol@example.com",
    }


@pytest.mark.parametrize(
    ("revoked", "offset"),
    [
        (True, timedelta(minutes=1)),  # revoked while otherwise live
        (False, TTL),  # at exp
        (False, TTL + timedelta(hours=1)),  # long expired
    ],
)
def test_introspection_of_an_inactive_token_says_only_that(
    ring: KeyRing, issuer: JwtIssuer, revoked: bool, offset: timedelta
) -> None:
    claims = _verify(issuer.issue(_grant(), NOW).token, ring, audience=None)

    assert introspection_response(claims, revoked=revoked, now=NOW + offset) == {"active": False}


def test_introspection_of_an_unverifiable_token_says_only_inactive() -> None:
    assert introspection_response(None, revoked=False, now=NOW) == {"active": False}
