"""DPoP proofs (RFC 9449) as core/dpop.py checks them: each refusal is a proof that would be
accepted but for the one thing the test changes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dpop import (
    InvalidDpopProof,
    ProofOfPossession,
    access_token_hash,
    jwk_thumbprint,
    normalise_url,
    verify_proof,
)
from core.model import ActionClass, Status
from stepup_client.dpop import DpopKey
from tests.support import ISSUER, TEST_POLICY, intent
from tests.unit.usecases.conftest import AGENT, T0, build_world

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
URL = "https://stepup.example.com/v1/requests/req_1/credential"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }


def make_proof(
    key: Any = None,
    *,
    jwk: dict[str, Any] | None = None,
    alg: str = "ES256",
    typ: str = "dpop+jwt",
    at: datetime = NOW,
    **claims: Any,
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    body: dict[str, Any] = {"jti": "proof-1", "htm": "POST", "htu": URL, "iat": int(at.timestamp())}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header = {"typ": typ, "jwk": jwk if jwk is not None else ec_jwk(key)}
    return jwt.encode(body, key, algorithm=alg, headers=header)


def test_a_good_proof_gives_the_keys_rfc7638_thumbprint() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ec_jwk(key)
    proof = verify_proof(make_proof(key), method="post", url=URL, now=NOW)
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":")
    )
    assert proof.jkt == _b64(hashlib.sha256(canonical.encode()).digest())
    assert proof.jti == "proof-1"
    assert proof.spent_until > NOW + timedelta(minutes=5)


def test_thumbprint_covers_the_required_members_only_in_order() -> None:
    jwk = ec_jwk(ec.generate_private_key(ec.SECP256R1()))
    shuffled = {"y": jwk["y"], "kid": "k1", "use": "sig", "x": jwk["x"], "kty": "EC"}
    shuffled["crv"] = "P-256"
    assert jwk_thumbprint(shuffled) == jwk_thumbprint(jwk)
    assert jwk_thumbprint({**jwk, "x": jwk["y"]}) != jwk_thumbprint(jwk)


def test_the_client_key_and_core_agree() -> None:
    key = DpopKey()
    proof = key.proof("POST", URL + "?q=1#frag", access_token="tok")
    verified = verify_proof(
        proof, method="POST", url=URL, now=datetime.now(UTC), access_token="tok"
    )
    assert verified.jkt == key.thumbprint


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("PS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
)
def test_other_asymmetric_algorithms(alg: str, key: Any) -> None:
    jwk = json.loads(_public_jwk_json(key))
    proof = make_proof(key, jwk=jwk, alg=alg)
    assert verify_proof(proof, method="POST", url=URL, now=NOW).jkt == jwk_thumbprint(jwk)


def _public_jwk_json(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key())
    return jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("HTTPS://StepUp.Example.com:443/v1/requests/req_1/credential", True),
        ("https://stepup.example.com/v1/requests/req_1/credential?x=1#y", True),
        ("https://stepup.example.com:8443/v1/requests/req_1/credential", False),
        ("http://stepup.example.com/v1/requests/req_1/credential", False),
        ("https://stepup.example.com/v1/requests/req_2/credential", False),
        ("https://evil.example.com/v1/requests/req_1/credential", False),
    ],
)
def test_htu_is_compared_normalised(url: str, same: bool) -> None:
    assert (normalise_url(url) == normalise_url(URL)) is same
    proof = make_proof(htu=url)
    if same:
        verify_proof(proof, method="POST", url=URL, now=NOW)
    else:
        with pytest.raises(InvalidDpopProof, match="htu"):
            verify_proof(proof, method="POST", url=URL, now=NOW)


def test_wrong_htm_is_refused() -> None:
    with pytest.raises(InvalidDpopProof, match="htm"):
        verify_proof(make_proof(htm="GET"), method="POST", url=URL, now=NOW)


@pytest.mark.parametrize("at", [NOW - timedelta(minutes=5, seconds=1), NOW + timedelta(seconds=61)])
def test_iat_out_of_window_is_refused(at: datetime) -> None:
    with pytest.raises(InvalidDpopProof, match="iat"):
        verify_proof(make_proof(at=at), method="POST", url=URL, now=NOW)


def test_iat_within_the_window_is_accepted() -> None:
    verify_proof(make_proof(iat=NOW.timestamp() + 0.5), method="POST", url=URL, now=NOW)
    for at in (NOW - timedelta(minutes=4, seconds=59), NOW + timedelta(seconds=59)):
        verify_proof(make_proof(at=at), method="POST", url=URL, now=NOW)


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    signer = ec.generate_private_key(ec.SECP256R1())
    shown = ec_jwk(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InvalidDpopProof, match="does not verify"):
        verify_proof(make_proof(signer, jwk=shown), method="POST", url=URL, now=NOW)


def test_a_private_jwk_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = {**ec_jwk(key), "d": _b64(key.private_numbers().private_value.to_bytes(32, "big"))}
    with pytest.raises(InvalidDpopProof, match="public key"):
        verify_proof(make_proof(key, jwk=private), method="POST", url=URL, now=NOW)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    part = [_b64(json.dumps(x).encode()) for x in (header, claims)]
    return ".".join([*part, _b64(signature)])


def test_alg_none_and_hmac_are_refused() -> None:
    jwk = ec_jwk(ec.generate_private_key(ec.SECP256R1()))
    claims = {"jti": "a", "htm": "POST", "htu": URL, "iat": int(NOW.timestamp())}
    none = _unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}, claims)
    with pytest.raises(InvalidDpopProof, match="alg"):
        verify_proof(none, method="POST", url=URL, now=NOW)
    hmac = jwt.encode(
        claims,
        "k" * 32,
        algorithm="HS256",
        headers={"typ": "dpop+jwt", "jwk": {"kty": "oct", "k": "a2tr"}},
    )
    with pytest.raises(InvalidDpopProof, match="alg"):
        verify_proof(hmac, method="POST", url=URL, now=NOW)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"jti": None}, "does not verify"),  # required claim missing
        ({"jti": "x" * 129}, "jti"),
        ({"iat": "soon"}, "iat"),
        ({"iat": True}, "iat"),
    ],
)
def test_malformed_proofs_are_refused(change: dict[str, Any], match: str) -> None:
    typ = change.pop("typ", "dpop+jwt")
    with pytest.raises(InvalidDpopProof, match=match):
        verify_proof(make_proof(typ=typ, **change), method="POST", url=URL, now=NOW)


def test_a_mismatched_key_type_for_the_alg_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-384",
        "x": _b64(numbers.x.to_bytes(48, "big")),
        "y": _b64(numbers.y.to_bytes(48, "big")),
    }
    proof = make_proof(key, jwk=jwk, alg="ES384")
    with pytest.raises(InvalidDpopProof, match="alg"):
        verify_proof(proof, method="POST", url=URL, now=NOW)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "x" * 9000])
def test_garbage_is_refused_not_crashed(garbage: str) -> None:
    with pytest.raises(InvalidDpopProof):
        verify_proof(garbage, method="POST", url=URL, now=NOW)


def test_ath_binds_the_proof_to_one_token() -> None:
    proof = make_proof(ath=access_token_hash("the-token"))
    verify_proof(proof, method="POST", url=URL, now=NOW, access_token="the-token")
    with pytest.raises(InvalidDpopProof, match="ath"):
        verify_proof(proof, method="POST", url=URL, now=NOW, access_token="another-token")


# -- the claim use case on the in-memory store (fixed times) -------------------------------

DPOP_POLICY_RULE = """  - name: secrets-need-dpop
    match: { action_class: secret_read }
    decision: allow
    require_dpop: true
  - name: reads
"""


def _claim_url(request_id: str) -> str:
    return f"{ISSUER}/v1/requests/{request_id}/credential"


def test_the_claim_binds_spends_and_requires_proofs(tmp_path: Path) -> None:
    world = build_world(tmp_path, TEST_POLICY.replace("  - name: reads\n", DPOP_POLICY_RULE))
    at = T0
    key = DpopKey(clock=lambda: at.timestamp())
    snap, _ = world.service.submit(
        AGENT, intent(AGENT, action_class=ActionClass.SECRET_READ), now=at + timedelta(minutes=2)
    )
    assert snap.status is Status.APPROVED
    with pytest.raises(InvalidDpopProof, match="requires a DPoP proof"):
        world.service.claim(snap.id, AGENT, now=at)
    assert world.stored(snap.id).status is Status.APPROVED and not world.store.state.issued
    proof = ProofOfPossession(
        key.proof("POST", _claim_url(snap.id)), "POST", (_claim_url(snap.id),)
    )
    claimed = world.service.claim(snap.id, AGENT, now=at, dpop=proof)
    assert claimed.credential.token_type == "DPoP"
    assert world.store.state.issued[claimed.credential.handle].jkt == key.thumbprint
    seen = world.service.introspect(claimed.credential.token, now=at)
    assert seen["active"] and seen["cnf"] == {"jkt": key.thumbprint}
    other, _ = world.service.submit(
        AGENT, intent(AGENT, action_class=ActionClass.SECRET_READ), now=at + timedelta(minutes=2)
    )
    replay = ProofOfPossession(proof.proof, "POST", (_claim_url(snap.id),))
    with pytest.raises(InvalidDpopProof, match="already used"):
        world.service.claim(other.id, AGENT, now=at, dpop=replay)
    # a proof is remembered until it is stale, then forgotten (and refused as stale anyway)
    later = at + timedelta(minutes=5, seconds=2)
    with pytest.raises(InvalidDpopProof, match="stale"):
        world.service.claim(other.id, AGENT, now=later, dpop=replay)
    assert world.store.state.dpop_proofs  # pruned only by a proof that verifies
    at = later
    fresh = ProofOfPossession(
        key.proof("POST", _claim_url(other.id)), "POST", (_claim_url(other.id),)
    )
    world.service.claim(other.id, AGENT, now=later, dpop=fresh)
    assert len(world.store.state.dpop_proofs) == 1


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_SIGNER = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["typ", "alg", "jwk", "kid", "crit"]), _JSON, max_size=4
    ),
    jwk=st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]), _JSON),
    claims=st.dictionaries(st.sampled_from(["jti", "htm", "htu", "iat", "ath"]), _JSON),
    sign=st.booleans(),
)
def test_any_proof_is_verified_or_refused_never_crashes(
    header: dict[str, Any], jwk: dict[str, Any], claims: dict[str, Any], sign: bool
) -> None:
    key = ec_jwk(_SIGNER) if sign else jwk  # signed: the real key, so the claims get checked
    full = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key} | header
    proof = _unsigned(full, claims, b"sig")
    if sign:  # a real ES256 signature (r || s) over whatever the header and claims are
        signing_input = proof.rsplit(".", 1)[0].encode()
        r, s = decode_dss_signature(_SIGNER.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        proof = proof.rsplit(".", 1)[0] + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    with contextlib.suppress(InvalidDpopProof):
        verify_proof(proof, method="POST", url=URL, now=NOW, access_token="t")
