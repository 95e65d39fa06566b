"""stepup_client.resource: a target system checks what an agent presents, against the real API's
JWKS, with credentials the Python client claimed (bound to its key by DPoP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from core.credentials import CREDENTIAL_TYP
from stepup_client import Credential, StepupClient
from stepup_client.dpop import DpopKey
from stepup_client.resource import (
    ArgumentsMismatch,
    DpopProofRequired,
    InvalidCredential,
    InvalidPresentedProof,
    PresentedCredentialError,
    PresentedCredentialVerifier,
    ReplayedProof,
    ScopeMismatch,
    verify_presented,
)
from tests.integration.conftest import LiveApi
from tests.support import ISSUER

TARGET_URL = "https://orders-db.internal/query"
ARGS = {"query": "select count(*) from orders", "limit": 10}
READ: dict[str, Any] = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "count yesterday's orders",
    "parameters": ARGS,
}


@pytest.fixture
def client(live_api: LiveApi) -> Iterator[StepupClient]:
    with StepupClient(live_api.url, live_api.agent_key, backoff=0.01) as stepup:
        yield stepup


@pytest.fixture
def verifier(live_api: LiveApi) -> PresentedCredentialVerifier:
    return PresentedCredentialVerifier(
        jwks=f"{live_api.url}/.well-known/jwks.json", issuer=ISSUER, audience="orders-db"
    )


def claimed(client: StepupClient, **changes: Any) -> Credential:
    return client.claim(client.submit(**(READ | changes)).id)


def present(
    verifier: PresentedCredentialVerifier,
    credential: Credential,
    proof: str | None,
    *,
    authorization: str | None = None,
    method: str = "POST",
    url: str = TARGET_URL,
    scope: str = "db.query",
    arguments: dict[str, Any] = ARGS,
) -> dict[str, Any]:
    return verifier.verify(
        authorization or credential.authorization,
        proof,
        method=method,
        url=url,
        scope=scope,
        arguments=arguments,
    )


def test_a_bound_credential_with_its_proof_is_honoured_once(
    client: StepupClient, verifier: PresentedCredentialVerifier
) -> None:
    credential = claimed(client)
    assert credential.authorization.startswith("DPoP ")
    proof = credential.dpop_proof("POST", TARGET_URL + "?page=2")
    claims = present(verifier, credential, proof)
    assert claims["scope"] == "db.query" and claims["cnf"]["jkt"] == credential.dpop_key.thumbprint  # type: ignore[union-attr]
    with pytest.raises(ReplayedProof):
        present(verifier, credential, proof)
    present(verifier, credential, credential.dpop_proof("POST", TARGET_URL))  # a fresh one


def test_a_stolen_bound_token_is_useless_without_the_key(
    client: StepupClient, verifier: PresentedCredentialVerifier
) -> None:
    credential = claimed(client)
    with pytest.raises(DpopProofRequired):
        present(verifier, credential, None)
    with pytest.raises(DpopProofRequired):  # presented as a bearer token
        present(verifier, credential, None, authorization=f"Bearer {credential.token}")
    thief = DpopKey()  # the thief's own key, with a correct ath for the stolen token
    with pytest.raises(InvalidPresentedProof, match="another key"):
        present(
            verifier, credential, thief.proof("POST", TARGET_URL, access_token=credential.token)
        )


def test_a_proof_for_another_token_call_or_time_is_refused(
    client: StepupClient, verifier: PresentedCredentialVerifier
) -> None:
    credential = claimed(client)
    key = credential.dpop_key
    assert key is not None
    other_token = key.proof("POST", TARGET_URL, access_token="another-token")
    with pytest.raises(InvalidPresentedProof, match="ath"):
        present(verifier, credential, other_token)
    with pytest.raises(InvalidPresentedProof, match="URL"):
        present(verifier, credential, credential.dpop_proof("POST", "https://elsewhere/query"))
    with pytest.raises(InvalidPresentedProof, match="GET"):
        present(verifier, credential, credential.dpop_proof("GET", TARGET_URL))
    old = DpopKey(key._key, clock=lambda: time.time() - 301)
    with pytest.raises(InvalidPresentedProof, match="stale"):
        present(verifier, credential, old.proof("POST", TARGET_URL, access_token=credential.token))


def test_scope_and_arguments_must_be_what_is_about_to_be_done(
    client: StepupClient, verifier: PresentedCredentialVerifier
) -> None:
    credential = claimed(client)
    with pytest.raises(ArgumentsMismatch):
        present(
            verifier,
            credential,
            credential.dpop_proof("POST", TARGET_URL),
            arguments=ARGS | {"limit": 1_000_000},
        )
    with pytest.raises(ScopeMismatch):
        present(
            verifier, credential, credential.dpop_proof("POST", TARGET_URL), scope="db.drop_table"
        )
    # key order and number spelling do not matter: the digest is RFC 8785's
    same = {"limit": 10.0, "query": ARGS["query"]}
    present(verifier, credential, credential.dpop_proof("POST", TARGET_URL), arguments=same)


def test_issuer_audience_times_and_signature_are_checked(
    live_api: LiveApi, client: StepupClient
) -> None:
    credential = claimed(client)
    jwks = f"{live_api.url}/.well-known/jwks.json"

    def check(verifier: PresentedCredentialVerifier, token: str | None = None) -> None:
        present(
            verifier,
            credential,
            credential.dpop_proof("POST", TARGET_URL),
            authorization=f"DPoP {token or credential.token}",
        )

    for verifier in (
        PresentedCredentialVerifier(jwks=jwks, issuer="https://evil.test", audience="orders-db"),
        PresentedCredentialVerifier(jwks=jwks, issuer=ISSUER, audience="payments-api"),
        PresentedCredentialVerifier(
            jwks=jwks, issuer=ISSUER, audience="orders-db", clock=lambda: time.time() + 3600
        ),
    ):
        with pytest.raises(InvalidCredential):
            check(verifier)
    good = PresentedCredentialVerifier(jwks=jwks, issuer=ISSUER, audience="orders-db")
    claims = jwt.decode(credential.token, options={"verify_signature": False})
    # a decision record signed by stepup is not a credential (typ)
    with pytest.raises(InvalidCredential):
        check(good, live_api.engine.keyring.sign(claims, typ="JWT"))
    kid = jwt.get_unverified_header(credential.token)["kid"]
    forged = jwt.encode(
        claims,
        DpopKey()._key,
        algorithm="ES256",
        headers={"typ": CREDENTIAL_TYP, "kid": kid},
    )
    with pytest.raises(InvalidCredential):  # ES256 is not stepup's algorithm
        check(good, forged)
    with pytest.raises(InvalidCredential):
        check(
            good,
            credential.token[:-4] + ("AAAA" if not credential.token.endswith("AAAA") else "BBBB"),
        )
    check(good)


def test_a_bearer_credential_needs_no_proof(live_api: LiveApi) -> None:
    with StepupClient(live_api.url, live_api.agent_key, backoff=0.01, dpop=False) as client:
        credential = claimed(client)
    verifier = PresentedCredentialVerifier(
        jwks=live_api.engine.keyring.jwks(), issuer=ISSUER, audience="orders-db"
    )
    assert present(verifier, credential, None)["sub"] == "deploy-bot"
    with pytest.raises(InvalidCredential):  # DPoP scheme, but the token is bound to no key
        present(verifier, credential, None, authorization=f"DPoP {credential.token}")


def test_the_function_keeps_one_verifier_so_replays_are_caught_across_calls(
    live_api: LiveApi, client: StepupClient
) -> None:
    credential = claimed(client)
    proof = credential.dpop_proof("PUT", TARGET_URL)
    options: dict[str, Any] = {
        "method": "PUT",
        "url": TARGET_URL,
        "jwks": f"{live_api.url}/.well-known/jwks.json",
        "issuer": ISSUER,
        "audience": "orders-db",
        "scope": "db.query",
        "arguments": ARGS,
    }
    assert verify_presented(credential.authorization, proof, **options)["jti"] == credential.jti
    with pytest.raises(ReplayedProof) as refused:
        verify_presented(credential.authorization, proof, **options)
    assert isinstance(refused.value, PresentedCredentialError)
    assert 'error="invalid_dpop_proof"' in refused.value.www_authenticate


@pytest.mark.parametrize(
    "authorization", ["", "Basic abc", "DPoP ", "DPoP not-a-jwt", "DPoP a.b.c"]
)
def test_garbage_is_a_typed_refusal(
    authorization: str, verifier: PresentedCredentialVerifier
) -> None:
    with pytest.raises(InvalidCredential):
        verifier.verify(
            authorization, "x", method="POST", url=TARGET_URL, scope="db.query", arguments=ARGS
        )
