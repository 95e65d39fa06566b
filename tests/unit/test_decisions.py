"""Signed decisions (docs/audit.md): round trip, tamper evidence, survival across key rotation."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.credentials import CredentialGrant, CredentialIssuer, JwtIssuer
from core.decisions import DecisionRecord, sign_decision, verify_decision
from core.errors import InvalidToken
from core.keys import KeyRing, RejectedToken
from core.model import Vote

DECIDED_AT = datetime(2026, 3, 4, 10, 15, 30, 123456, tzinfo=UTC)


def _b64url_json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _decode_part(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


def _record(**changes: Any) -> DecisionRecord:
    values: dict[str, Any] = {
        "request_id": "req_01",
        "parameters_digest": "sha256:" + "cd" * 32,
        "decision": Vote.APPROVE,
        "approver_slack_id": "U0ALICE",
        "approver_email": "alice@example.com",
        "decided_at": DECIDED_AT,
        "rule": "prod-destructive",
        "reason": None,
    }
    values.update(changes)
    return DecisionRecord(**values)


@pytest.mark.parametrize(
    "record",
    [
        _record(),
        _record(decision=Vote.DENY, reason="not during the freeze"),
        _record(approver_email=None, rule=None),
    ],
    ids=["approve", "deny with reason", "no email, no rule"],
)
def test_round_trip(ring: KeyRing, record: DecisionRecord) -> None:
    assert verify_decision(sign_decision(record, ring), ring) == record


def test_time_in_another_zone_round_trips_to_the_same_instant(ring: KeyRing) -> None:
    paris = DECIDED_AT.astimezone(timezone(timedelta(hours=1)))

    back = verify_decision(sign_decision(_record(decided_at=paris), ring), ring)

    assert back.decided_at == DECIDED_AT
    assert back.decided_at.utcoffset() == timedelta(0)


def test_decision_is_a_jws_verifiable_with_pyjwt_against_the_jwks(ring: KeyRing) -> None:
    jws = sign_decision(_record(), ring)

    header = jwt.get_unverified_header(jws)
    key = jwt.PyJWKSet.from_dict(ring.jwks())[header["kid"]]
    payload = jwt.decode(jws, key, algorithms=["EdDSA"])

    assert header == {"alg": "EdDSA", "typ": "stepup-decision+jwt", "kid": ring.active_kid}
    assert payload == {
        "request_id": "req_01",
        "parameters_digest": "sha256:" + "cd" * 32,
        "decision": "approve",
        "approver_slack_id": "U0ALICE",
        "approver_email": "alice@example.com",
        "decided_at": "2026-03-04T10:15:30.123456+00:00",
        "iat": int(DECIDED_AT.timestamp()),
        "rule": "prod-destructive",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decision", "deny"),
        ("parameters_digest", "sha256:" + "00" * 32),
        ("approver_slack_id", "U0MALLORY"),
        ("decided_at", "2026-03-04T09:00:00+00:00"),
    ],
)
def test_tampered_decision_is_refused(ring: KeyRing, field: str, value: str) -> None:
    header, payload, signature = sign_decision(_record(), ring).split(".")
    tampered = {**_decode_part(payload), field: value}

    with pytest.raises(InvalidToken):
        verify_decision(f"{header}.{_b64url_json(tampered)}.{signature}", ring)


def test_decision_signed_with_a_rotated_out_key_still_verifies(
    ring: KeyRing, tmp_path: Path
) -> None:
    old_kid = ring.active_kid
    jws = sign_decision(_record(), ring)

    ring.rotate()
    ring.rotate()

    assert jwt.get_unverified_header(jws)["kid"] == old_kid != ring.active_kid
    assert verify_decision(jws, ring) == _record()
    assert verify_decision(jws, KeyRing.load_or_create(tmp_path / "keys")) == _record()
    assert verify_decision(jws, KeyRing.from_jwks(ring.jwks())) == _record()


def test_decision_from_another_ring_is_refused(ring: KeyRing, tmp_path: Path) -> None:
    stranger = KeyRing.load_or_create(tmp_path / "stranger")

    with pytest.raises(InvalidToken):
        verify_decision(sign_decision(_record(), stranger), ring)


def test_foreign_key_claiming_our_kid_is_refused(ring: KeyRing) -> None:
    jws = sign_decision(_record(), ring)
    header, payload = (_decode_part(p) for p in jws.split(".")[:2])
    forged = jwt.encode(payload, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=header)

    with pytest.raises(InvalidToken):
        verify_decision(forged, ring)


def test_alg_none_decision_is_refused(ring: KeyRing) -> None:
    header, payload, _ = sign_decision(_record(), ring).split(".")
    unsigned = {**_decode_part(header), "alg": "none"}

    with pytest.raises(InvalidToken):
        verify_decision(f"{_b64url_json(unsigned)}.{payload}.", ring)


def test_a_credential_is_not_a_decision(ring: KeyRing) -> None:
    grant = CredentialGrant(
        request_id="req_01",
        agent="agent-deployer",
        audience="db",
        scope="db.migrate",
        args_digest="sha256:" + "cd" * 32,
        environment="production",
        approvers=("alice@example.com",),
        on_behalf_of=None,
        ttl=timedelta(minutes=5),
    )
    issuer: CredentialIssuer = JwtIssuer(ring, "https://stepup.example.com")  # mypy: conforms
    token = issuer.issue(grant, DECIDED_AT).token

    with pytest.raises(InvalidToken):
        verify_decision(token, ring)


@pytest.mark.parametrize(
    "payload",
    [
        {"request_id": "req_01"},  # fields missing
        {"request_id": "r", "parameters_digest": "d", "decision": "maybe",
         "approver_slack_id": "U", "decided_at": DECIDED_AT.isoformat()},
        {"request_id": "r", "parameters_digest": "d", "decision": "approve",
         "approver_slack_id": "U", "decided_at": "yesterday"},
        {"request_id": "r", "parameters_digest": "d", "decision": "approve",
         "approver_slack_id": "U", "decided_at": "2026-03-04T10:15:30"},  # naive time
        {"request_id": 7, "parameters_digest": "d", "decision": "approve",
         "approver_slack_id": "U", "decided_at": DECIDED_AT.isoformat()},
    ],
    ids=["missing fields", "unknown vote", "bad time", "naive time", "non-string id"],
)  # fmt: skip
def test_validly_signed_but_malformed_decision_is_refused(
    ring: KeyRing, payload: dict[str, Any]
) -> None:
    with pytest.raises(RejectedToken) as excinfo:
        verify_decision(ring.sign(payload, typ="stepup-decision+jwt"), ring)
    assert excinfo.value.reason == "malformed_claim"  # signature fine: refused for its content


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "...", "é.é.é"])
def test_garbage_is_refused(ring: KeyRing, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verify_decision(garbage, ring)


def test_record_requires_an_aware_time_and_a_vote() -> None:
    with pytest.raises(ValueError, match="timezone"):
        _record(decided_at=DECIDED_AT.replace(tzinfo=None))
    with pytest.raises(TypeError):
        _record(decision="approve")
