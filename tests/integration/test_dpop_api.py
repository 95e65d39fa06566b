"""DPoP (RFC 9449) through the real HTTP API, on SQLite and PostgreSQL: a claim with a proof
gets a token bound to the agent's key; bad, replayed or missing proofs claim nothing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.agents import AgentRegistry
from core.credentials import CREDENTIAL_TYP, JwtIssuer
from core.dpop import InvalidDpopProof, ProofOfPossession
from core.keys import KeyRing
from core.policy import PolicyHolder
from core.service import Stepup
from core.storage.audit_verify import verify_database
from core.storage.database import Database
from core.storage.tables import AuditRow, CredentialRow, DpopProofRow
from stepup_client import NotDpopBound, StepupClient
from stepup_client.dpop import DpopKey
from tests.integration.test_issuer_claims import (  # noqa: F401  # fixtures: engine, broker, keys_of
    Broker,
    agent_of,
    broker,
    engine,
    keys_of,
    read_query,
)
from tests.support import ISSUER, OWNER, TEST_POLICY, Engine, eventually

POLICY = TEST_POLICY.replace(
    "  - name: reads\n",
    """  - name: secrets-need-dpop
    match: { action_class: secret_read }
    decision: allow
    require_dpop: true
    max_ttl: 5m
  - name: reads
""",
)
READ: dict[str, Any] = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "count orders",
    "parameters": {"q": 1},
}
SECRET: dict[str, Any] = READ | {
    "action": "vault.read",
    "action_class": "secret_read",
    "target": "vault",
}


@dataclass
class Live:
    url: str
    service: Stepup
    db: Database
    keyring: KeyRing
    agent_key: str
    server_key: str

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def submit(self, body: dict[str, Any]) -> str:
        with self.client() as c:
            answer = c.post("/v1/requests", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "approved"
        return str(answer.json()["id"])

    def claim(self, request_id: str, *headers: tuple[str, str]) -> httpx.Response:
        with self.client() as c:
            return c.post(f"/v1/requests/{request_id}/credential", headers=list(headers))

    def claim_url(self, request_id: str) -> str:
        return f"{self.url}/v1/requests/{request_id}/credential"

    def status(self, request_id: str) -> str:
        with self.client() as c:
            return str(c.get(f"/v1/requests/{request_id}").json()["status"])

    def introspect(self, token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.server_key}"}
        answer = httpx.post(f"{self.url}/v1/introspect", data={"token": token}, headers=headers)
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body

    def count(self, table: type) -> int:
        with self.db.read() as session:
            return int(session.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[Live]:
    """The API served on a socket bound first, so its public URL is the URL agents use."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    service = Stepup(
        db,
        PolicyHolder.from_file(policy),
        keyring,
        JwtIssuer(keyring, issuer_url=url),
        issuer_url=url,
    )
    registry = AgentRegistry(service)
    now = datetime.now(UTC)
    agent_key = registry.add("deploy-bot", OWNER, by="test", now=now)
    server_key = registry.add_resource_server("orders-db", by="test", now=now)
    app = create_app(ApiContext(service=service, registry=registry))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    eventually(lambda: bool(server.started), timeout=10, interval=0.01, message="no server")
    try:
        yield Live(url, service, db, keyring, agent_key, server_key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_a_claim_with_a_proof_is_bound_to_the_key_and_introspection_shows_cnf(live: Live) -> None:
    key = DpopKey()
    request_id = live.submit(READ)
    answer = live.claim(request_id, ("DPoP", key.proof("POST", live.claim_url(request_id))))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": key.thumbprint}
    with live.db.read() as session:
        stored = session.execute(select(CredentialRow.jkt)).scalar_one()
    assert stored == key.thumbprint
    seen = live.introspect(body["token"])
    assert seen["active"] is True
    assert seen["token_type"] == "DPoP" and seen["cnf"] == {"jkt": key.thumbprint}
    with live.db.read() as session:
        (issued,) = session.execute(
            select(AuditRow.data).where(AuditRow.kind == "credential.issued")
        ).scalars()
    assert '"cnf"' in str(issued).replace("'", '"') and key.thumbprint in str(issued)
    report = verify_database(live.db, live.keyring)  # the audit log still tells it exactly
    assert report.requests.ok, report.requests.mismatches


def test_a_claim_without_a_proof_stays_a_bearer_token(live: Live) -> None:
    answer = live.claim(live.submit(READ))
    assert answer.status_code == 200 and answer.json()["token_type"] == "Bearer"
    seen = live.introspect(answer.json()["token"])
    assert seen["active"] is True and "cnf" not in seen and seen["token_type"] == "Bearer"


def test_require_dpop_refuses_a_claim_without_a_proof_and_claims_nothing(live: Live) -> None:
    request_id = live.submit(SECRET)
    refused = live.claim(request_id)
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["title"] == "Invalid DPoP proof"
    assert "requires a DPoP proof" in refused.json()["detail"]
    assert live.status(request_id) == "approved" and live.count(CredentialRow) == 0
    key = DpopKey()
    answer = live.claim(request_id, ("DPoP", key.proof("POST", live.claim_url(request_id))))
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP"


def test_a_replayed_proof_is_refused(live: Live) -> None:
    key = DpopKey()
    request_id = live.submit(SECRET)
    proof = key.proof("POST", live.claim_url(request_id))
    assert live.claim(request_id, ("DPoP", proof)).status_code == 200
    again = live.claim(request_id, ("DPoP", proof))  # a 409 if the replay went unnoticed
    assert again.status_code == 400 and "already used" in again.json()["detail"]
    assert live.count(DpopProofRow) == 1


def test_a_replayed_proof_is_refused_even_when_its_first_use_claimed_nothing(live: Live) -> None:
    key = DpopKey()
    first = live.submit(SECRET)
    proof = key.proof("POST", live.claim_url(first))
    with live.client() as c:  # the request is cancelled: the claim fails, the proof is spent
        assert c.post(f"/v1/requests/{first}/cancel").status_code == 200
    assert live.claim(first, ("DPoP", proof)).status_code == 409
    assert live.claim(first, ("DPoP", proof)).status_code == 400


@pytest.mark.parametrize(
    ("method", "url_of"),
    [
        ("POST", lambda live, rid: f"{live.url}/v1/requests/req_other/credential"),  # wrong htu
        ("POST", lambda live, rid: f"https://evil.example/v1/requests/{rid}/credential"),
        ("GET", lambda live, rid: live.claim_url(rid)),  # wrong htm
    ],
)
def test_a_proof_for_another_call_is_refused(live: Live, method: str, url_of: Any) -> None:
    request_id = live.submit(SECRET)
    proof = DpopKey().proof(method, url_of(live, request_id))
    refused = live.claim(request_id, ("DPoP", proof))
    assert refused.status_code == 400, refused.text
    assert live.status(request_id) == "approved" and live.count(CredentialRow) == 0


def test_stale_foreign_private_and_unsigned_proofs_are_refused_never_a_500(live: Live) -> None:
    request_id = live.submit(SECRET)
    url = live.claim_url(request_id)
    stale = DpopKey(clock=lambda: (datetime.now(UTC) - timedelta(minutes=6)).timestamp())
    signer, shown = DpopKey(), DpopKey()
    foreign = jwt.encode(
        {"jti": "j1", "htm": "POST", "htu": url, "iat": int(datetime.now(UTC).timestamp())},
        signer._key,
        algorithm="ES256",
        headers={"typ": "dpop+jwt", "jwk": shown.public_jwk},
    )
    private_key = ec.generate_private_key(ec.SECP256R1())
    d = private_key.private_numbers().private_value.to_bytes(32, "big")
    private_jwk = {**DpopKey(private_key).public_jwk, "d": jwt.utils.base64url_encode(d).decode()}
    private = jwt.encode(
        {"jti": "j2", "htm": "POST", "htu": url, "iat": int(datetime.now(UTC).timestamp())},
        private_key,
        algorithm="ES256",
        headers={"typ": "dpop+jwt", "jwk": private_jwk},
    )
    unsigned = jwt.encode(
        {"jti": "j3", "htm": "POST", "htu": url, "iat": int(datetime.now(UTC).timestamp())},
        None,  # type: ignore[arg-type]  # alg none takes no key
        algorithm="none",
        headers={"typ": "dpop+jwt", "jwk": shown.public_jwk},
    )
    for proof in (stale.proof("POST", url), foreign, private, unsigned, "garbage", "a.b.c"):
        refused = live.claim(request_id, ("DPoP", proof))
        assert refused.status_code == 400, (proof, refused.text)
    two = live.claim(request_id, ("DPoP", DpopKey().proof("POST", url)), ("DPoP", "x"))
    assert two.status_code == 400
    assert live.status(request_id) == "approved" and live.count(CredentialRow) == 0


def test_introspection_holds_the_tokens_cnf_to_the_stored_binding(live: Live) -> None:
    """A token re-signed with a leaked signing key cannot add, drop or change the binding."""
    bearer = live.claim(live.submit(READ)).json()["token"]
    key = DpopKey()
    rid = live.submit(READ)
    bound = live.claim(rid, ("DPoP", key.proof("POST", live.claim_url(rid)))).json()["token"]
    plain = jwt.decode(bearer, options={"verify_signature": False})
    tied = jwt.decode(bound, options={"verify_signature": False})
    forged = [
        plain | {"cnf": {"jkt": key.thumbprint}},  # a bearer token made to look bound
        {k: v for k, v in tied.items() if k != "cnf"},  # a bound token stripped of its key
        tied | {"cnf": {"jkt": DpopKey().thumbprint}},  # bound to the thief's key instead
        tied | {"cnf": "x"},
    ]
    for claims in forged:
        token = live.keyring.sign(claims, typ=CREDENTIAL_TYP)
        assert live.introspect(token) == {"active": False}
    assert live.introspect(live.keyring.sign(tied, typ=CREDENTIAL_TYP))["active"] is True


def test_the_python_client_binds_its_claims_by_itself(live: Live) -> None:
    with StepupClient(live.url, live.agent_key, backoff=0.01) as client:
        request = client.submit(**SECRET)
        credential = client.claim(request.id)
    assert credential.token_type == "DPoP"
    assert credential.authorization == f"DPoP {credential.token}"
    claims = jwt.decode(credential.token, options={"verify_signature": False})
    assert credential.dpop_key is not None
    assert claims["cnf"] == {"jkt": credential.dpop_key.thumbprint}
    with StepupClient(live.url, live.agent_key, backoff=0.01) as other:
        assert other.claim(other.submit(**READ).id).dpop_key is credential.dpop_key  # per process


def test_the_python_client_can_claim_bearer_tokens(live: Live) -> None:
    with StepupClient(live.url, live.agent_key, backoff=0.01, dpop=False) as client:
        credential = client.claim(client.submit(**READ).id)
    assert credential.token_type == "Bearer" and credential.dpop_key is None


# -- an issuer-backed rule (the http broker of test_issuer_claims) --------------------------


def test_an_issuer_backed_claim_is_bound_and_a_replay_mints_nothing(
    engine: Engine,  # noqa: F811  # the fixtures imported above
    broker: Broker,  # noqa: F811
) -> None:
    agent = agent_of(engine)
    first, _ = engine.service.submit(agent, read_query(), now=datetime.now(UTC))
    second, _ = engine.service.submit(agent, read_query(), now=datetime.now(UTC))
    key = DpopKey()
    url = f"{ISSUER}/v1/requests/{first.id}/credential"
    proof = ProofOfPossession(key.proof("POST", url), "POST", (url,))
    claimed = engine.service.claim(first.id, agent, now=datetime.now(UTC), dpop=proof)
    assert claimed.minted is not None and claimed.credential.token_type == "DPoP"
    with engine.db.read() as session:
        assert session.execute(select(CredentialRow.jkt)).scalar_one() == key.thumbprint
    seen = engine.service.introspect(claimed.credential.token, now=datetime.now(UTC))
    assert seen["active"] is True and seen["cnf"] == {"jkt": key.thumbprint}
    with pytest.raises(InvalidDpopProof, match="already used"):
        engine.service.claim(second.id, agent, now=datetime.now(UTC), dpop=proof)
    assert len(broker.ops("issue")) == 1  # the replay reached no issuer
    assert engine.service.get(second.id).status.value == "approved"


def test_the_client_works_with_a_server_without_dpop() -> None:
    """An older server ignores the header and answers a bearer token: the client takes it."""
    seen: list[httpx.Request] = []

    def old_server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "token": "t0ken",
                "token_type": "Bearer",
                "expires_at": "2026-12-02T12:00:00+00:00",
                "scope": "db.query",
                "jti": "j1",
                "request_id": "req_1",
                "credential_type": "jwt",
            },
        )

    with StepupClient(
        "https://stepup.example.com/base", "stpa_x", transport=httpx.MockTransport(old_server)
    ) as client:
        credential = client.claim("req_1")
    (request,) = seen
    proof = jwt.decode(request.headers["DPoP"], options={"verify_signature": False})
    assert proof["htm"] == "POST"
    assert proof["htu"] == "https://stepup.example.com/base/v1/requests/req_1/credential"
    assert credential.token_type == "Bearer" and credential.authorization == "Bearer t0ken"
    with pytest.raises(NotDpopBound):
        credential.dpop_proof("GET", "https://target.example.com/")
