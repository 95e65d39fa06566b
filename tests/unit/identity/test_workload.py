"""core/identity: the verification of workload tokens, with a fake fetch and a fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from core.errors import Unauthenticated, ValidationFailed
from core.identity.jwks import FetchFailed
from core.identity.trust import (
    TrustedIssuer,
    TrustKind,
    checked_bundle,
    checked_url,
    spiffe_trust_domain,
)
from core.identity.workload import WorkloadVerifier, looks_like_jwt

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ISS = "https://issuer.example.com"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public)
    else:
        data = OKPAlgorithm.to_jwk(public)
    found: dict[str, Any] = json.loads(data)
    return found | {"kid": kid} | extra


class Provider:
    """Documents by URL, counting fetches; a clock moved by hand."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetched: list[str] = []
        self.now = 0.0
        self.issuer = ISS

    def fetch(self, url: str) -> Any:
        self.fetched.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": self.issuer, "jwks_uri": ISS + "/keys"}
        if url == ISS + "/keys":
            return {"keys": self.keys}
        raise FetchFailed(url)

    def clock(self) -> float:
        return self.now


TRUSTED = TrustedIssuer("idp", TrustKind.OIDC, ISS, "stepup")


def verifier(provider: Provider, *trusted: TrustedIssuer) -> WorkloadVerifier:
    return WorkloadVerifier(
        lambda: list(trusted or [TRUSTED]),
        fetch=provider.fetch,
        clock=provider.clock,
        floor=30.0,
        max_age=600.0,
    )


def token(key: Any, alg: str, kid: str, **claims: Any) -> str:
    body = {"iss": ISS, "sub": "wl-1", "aud": "stepup", "exp": int(T0.timestamp()) + 300}
    claims = {k: v for k, v in (body | claims).items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(
    ("key", "alg"), [(RSA_KEY, "RS256"), (RSA_KEY, "PS256"), (EC_KEY, "ES256"), (ED_KEY, "EdDSA")]
)
def test_each_asymmetric_algorithm_is_accepted(key: Any, alg: str) -> None:
    provider = Provider([jwk(key, "k1")])
    found = verifier(provider).verify(token(key, alg, "k1"), now=T0)
    assert (found.trust, found.subject, found.label) == ("idp", "wl-1", "oidc:idp")
    assert provider.fetched == [ISS + "/.well-known/openid-configuration", ISS + "/keys"]


def test_a_key_of_another_type_than_the_algorithm_is_refused() -> None:
    # An EC key published under the kid an RS256 token names.
    provider = Provider([jwk(EC_KEY, "k1")])
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(token(RSA_KEY, "RS256", "k1"), now=T0)
    provider = Provider([jwk(RSA_KEY, "k1", alg="PS256")])
    with pytest.raises(Unauthenticated):  # the JWK says PS256, the token RS256
        verifier(provider).verify(token(RSA_KEY, "RS256", "k1"), now=T0)


def test_a_symmetric_key_in_the_jwks_is_never_used() -> None:
    secret = "s" * 32
    provider = Provider([{"kty": "oct", "kid": "k1", "k": "c" * 43}])
    claims = {"iss": ISS, "sub": "wl-1", "aud": "stepup", "exp": 2**31}
    forged = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(forged, now=T0)


def test_times_are_checked_at_the_given_moment_with_a_minute_of_skew() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    check = verifier(provider)
    exp = int(T0.timestamp()) + 300
    signed = token(EC_KEY, "ES256", "k1", exp=exp, nbf=int(T0.timestamp()) + 30)
    assert check.verify(signed, now=T0).subject == "wl-1"  # nbf within the skew
    assert check.verify(signed, now=T0 + timedelta(seconds=359)).subject == "wl-1"
    with pytest.raises(Unauthenticated):
        check.verify(signed, now=T0 + timedelta(seconds=360))
    early = token(EC_KEY, "ES256", "k1", nbf=int(T0.timestamp()) + 61)
    with pytest.raises(Unauthenticated):
        check.verify(early, now=T0)
    with pytest.raises(Unauthenticated):
        check.verify(token(EC_KEY, "ES256", "k1", exp="tomorrow"), now=T0)


def test_the_audience_may_be_one_of_a_list() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    check = verifier(provider)
    assert check.verify(token(EC_KEY, "ES256", "k1", aud=["a", "stepup"]), now=T0)
    with pytest.raises(Unauthenticated):
        check.verify(token(EC_KEY, "ES256", "k1", aud=["a", "b"]), now=T0)


def test_a_discovery_document_naming_another_issuer_gives_no_keys() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    provider.issuer = "https://evil.example.com"
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(token(EC_KEY, "ES256", "k1"), now=T0)
    assert provider.fetched == [ISS + "/.well-known/openid-configuration"]


def test_unknown_kids_refresh_no_sooner_than_the_floor_and_old_keys_after_max_age() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    check = verifier(provider)
    check.verify(token(EC_KEY, "ES256", "k1"), now=T0)
    assert len(provider.fetched) == 2
    provider.keys = [jwk(EC_KEY, "k2")]
    for step in range(5):
        provider.now = 5.0 * step
        with pytest.raises(Unauthenticated):
            check.verify(token(EC_KEY, "ES256", "k2"), now=T0)
    assert len(provider.fetched) == 2
    provider.now = 30.0
    assert check.verify(token(EC_KEY, "ES256", "k2"), now=T0)
    assert len(provider.fetched) == 3
    # k2 is dropped by the provider: still trusted until max_age, then fetched again.
    provider.keys = [jwk(EC_KEY, "k3")]
    provider.now = 600.0
    assert check.verify(token(EC_KEY, "ES256", "k2"), now=T0)
    assert len(provider.fetched) == 3
    provider.now = 630.0
    with pytest.raises(Unauthenticated):
        check.verify(token(EC_KEY, "ES256", "k2"), now=T0)
    assert len(provider.fetched) == 4


def test_trusted_issuers_are_read_again_on_a_miss_no_more_than_once_a_second() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    trusted: list[TrustedIssuer] = []
    reads: list[int] = []

    def source() -> list[TrustedIssuer]:
        reads.append(1)
        return list(trusted)

    check = WorkloadVerifier(source, fetch=provider.fetch, clock=provider.clock)
    signed = token(EC_KEY, "ES256", "k1")
    with pytest.raises(Unauthenticated):
        check.verify(signed, now=T0)
    trusted.append(TRUSTED)
    with pytest.raises(Unauthenticated):  # the same moment: not read again
        check.verify(signed, now=T0)
    assert len(reads) == 1
    provider.now = 1.0
    assert check.verify(signed, now=T0).trust == "idp"
    assert len(reads) == 2


def test_spiffe_svids_need_a_spiffe_id_of_the_trust_domain() -> None:
    bundle = checked_bundle(json.dumps({"keys": [jwk(EC_KEY, "b1", use="jwt-svid")]}))
    domain = TrustedIssuer(
        "td.example", TrustKind.SPIFFE, "spiffe://td.example", "stepup", jwks=bundle
    )
    provider = Provider([])
    check = verifier(provider, domain)
    svid = token(EC_KEY, "ES256", "b1", iss=None, sub="spiffe://td.example/wl")
    assert check.verify(svid, now=T0).label == "spiffe"
    for sub in ("spiffe://other.example/wl", "spiffe://td.example/../x", "td.example/wl"):
        with pytest.raises(Unauthenticated):
            check.verify(token(EC_KEY, "ES256", "b1", sub=sub), now=T0)
    assert provider.fetched == []  # a bundle is never fetched


def test_bundles_urls_and_shapes() -> None:
    with pytest.raises(ValidationFailed):
        checked_bundle(json.dumps({"keys": [jwk(EC_KEY, "x", use="x509-svid")]}))
    with pytest.raises(ValidationFailed):
        checked_bundle("not json")
    for url in ("http://issuer.example.com", "https://u:p@x.example", "ftp://x", "https://x/?a=1"):
        with pytest.raises(ValidationFailed):
            checked_url(url, "issuer")
    assert checked_url("http://127.0.0.1:8080", "issuer") == "http://127.0.0.1:8080"
    assert spiffe_trust_domain("spiffe://td.example/a/b") == "td.example"
    assert spiffe_trust_domain("spiffe://TD/a") is None
    assert looks_like_jwt("a.b.c") and not looks_like_jwt("stpa_a.b.c")
    assert not looks_like_jwt("a.b") and not looks_like_jwt("a" * 20000 + ".b.c")


def test_a_token_seen_before_is_checked_again_for_its_times_its_trust_and_its_key() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    trusted = [TRUSTED]
    check = WorkloadVerifier(
        lambda: list(trusted), fetch=provider.fetch, clock=provider.clock, max_age=600.0
    )
    signed = token(EC_KEY, "ES256", "k1")
    assert check.verify(signed, now=T0).subject == "wl-1"
    assert check.verify(signed, now=T0).subject == "wl-1"  # remembered
    with pytest.raises(Unauthenticated):  # expired since, remembered or not
        check.verify(signed, now=T0 + timedelta(seconds=400))
    # Its key dropped by the provider: once the keys are fetched again, the token is refused.
    provider.keys = [jwk(EC_KEY, "k2")]
    provider.now = 600.0
    with pytest.raises(Unauthenticated):
        check.verify(signed, now=T0)
    # The trust replaced (another audience): verified again, against the new terms.
    provider.keys = [jwk(EC_KEY, "k1")]
    provider.now = 700.0
    assert check.verify(signed, now=T0)
    trusted[0] = TrustedIssuer("idp", TrustKind.OIDC, ISS, "another-audience")
    provider.now = 706.0  # past the 5 s between reads of the trusted issuers
    with pytest.raises(Unauthenticated):
        check.verify(signed, now=T0)


def test_a_header_with_crit_is_refused() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    body = {"iss": ISS, "sub": "wl-1", "aud": "stepup", "exp": int(T0.timestamp()) + 300}
    signed = jwt.encode(body, EC_KEY, algorithm="ES256", headers={"kid": "k1", "crit": ["exp"]})
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(signed, now=T0)


def test_a_fetch_that_breaks_is_a_refusal_not_an_error() -> None:
    def broken(url: str) -> Any:
        raise RuntimeError("connection reset in a strange way")

    check = WorkloadVerifier(lambda: [TRUSTED], fetch=broken, clock=lambda: 0.0)
    with pytest.raises(Unauthenticated):
        check.verify(token(EC_KEY, "ES256", "k1"), now=T0)


def test_a_jwt_svid_must_say_typ_jwt_or_jose_when_it_says_one() -> None:
    bundle = checked_bundle(json.dumps({"keys": [jwk(EC_KEY, "b1", use="jwt-svid")]}))
    domain = TrustedIssuer(
        "td.example", TrustKind.SPIFFE, "spiffe://td.example", "stepup", jwks=bundle
    )
    check = verifier(Provider([]), domain)
    body = {"sub": "spiffe://td.example/wl", "aud": "stepup", "exp": int(T0.timestamp()) + 60}
    for typ, accepted in (("JWT", True), ("JOSE", True), ("at+jwt", False)):
        signed = jwt.encode(body, EC_KEY, algorithm="ES256", headers={"kid": "b1", "typ": typ})
        if accepted:
            assert check.verify(signed, now=T0).subject == "spiffe://td.example/wl"
        else:
            with pytest.raises(Unauthenticated):
                check.verify(signed, now=T0)


# -- malformed input is a refusal, never a crash (review findings) -------------------------


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: dict[str, Any], body: bytes) -> str:
    head = _b64(json.dumps(header).encode())
    payload = _b64(body)
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(f"{head}.{payload}".encode(), EC_KEY)
    return f"{head}.{payload}.{_b64(signature)}"


def test_a_signature_that_is_not_base64url_is_refused_not_a_crash() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    head, body, _ = token(EC_KEY, "ES256", "k1").split(".")
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(f"{head}.{body}.A", now=T0)  # 1 character: no base64


def test_a_deeply_nested_header_is_refused_not_a_crash() -> None:
    provider = Provider([jwk(EC_KEY, "k1")])
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(f"{_b64(b'[' * 5000)}.{_b64(b'{}')}.AAAA", now=T0)


def test_an_infinite_expiry_is_refused() -> None:
    """JSON's 1e999 reads as infinity: signed by the trusted issuer, it would never expire."""
    provider = Provider([jwk(EC_KEY, "k1")])
    body = b'{"iss":"%s","sub":"wl-1","aud":"stepup","exp":1e999}' % ISS.encode()
    with pytest.raises(Unauthenticated):
        verifier(provider).verify(_signed({"alg": "ES256", "kid": "k1"}, body), now=T0)
