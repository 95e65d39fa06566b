"""One round trip: ``POST /v1/requests`` with ``"claim": true`` (docs/api.md), over real HTTP
on SQLite and PostgreSQL; and the lean claim and complete (one transaction each)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import event, func, select

from core.storage.tables import AuditRow, CredentialRow, RequestRow, RevocationRow
from tests.integration.conftest import LiveApi
from tests.support import submit_body

READ = submit_body(
    action="db.query", action_class="read", justification="look up order 42", parameters={"o": 42}
)
RESTART = submit_body()  # production destructive: two approvals
DROP = READ | {"action": "db.drop_database", "environment": "production"}  # denied


def audit_of(live_api: LiveApi, request_id: str) -> list[tuple[str, dict[str, Any]]]:
    with live_api.engine.db.read() as session:
        rows = session.execute(
            select(AuditRow.kind, AuditRow.data)
            .where(AuditRow.request_id == request_id)
            .order_by(AuditRow.seq)
        ).all()
    return [(kind, json.loads(data)) for kind, data in rows]


def count(live_api: LiveApi, table: Any) -> int:
    with live_api.engine.db.read() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def verified(live_api: LiveApi, token: str) -> dict[str, Any]:
    jwks = httpx.get(f"{live_api.url}/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(token)
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key=jwt.PyJWK(key), algorithms=["EdDSA"], audience="orders-db"
    )
    return claims


def test_a_pre_authorised_submit_with_claim_answers_the_credential(live_api: LiveApi) -> None:
    body = READ | {"target": "orders-db", "claim": True}
    with live_api.client() as c:
        answer = c.post("/v1/requests", json=body)
        assert answer.status_code == 201, answer.text
        request = answer.json()
        assert request["status"] == "active"
        credential = request["credential"]
        claims = verified(live_api, credential["token"])
        assert claims["request_id"] == request["id"] and claims["sub"] == "deploy-bot"
        assert claims["args_digest"] == request["parameters_digest"]
        assert claims["jti"] == credential["jti"] and claims["scope"] == "db.query"
        assert credential["token_type"] == "Bearer" and credential["credential_type"] == "jwt"
        assert answer.headers["location"] == f"/v1/requests/{request['id']}"
        assert answer.headers["cache-control"] == "no-store"  # a token: never cached
        # Recorded as a claim: the request is active, the credential live, a second claim 409.
        seen = c.get(f"/v1/requests/{request['id']}").json()
        assert seen["status"] == "active" and "token" not in seen["credential"]
        assert c.post(f"/v1/requests/{request['id']}/credential").status_code == 409
        other = c.post("/v1/requests", json=body | {"claim": False}).json()
        claim = c.post(f"/v1/requests/{other['id']}/credential")
        assert claim.status_code == 200 and claim.headers["cache-control"] == "no-store"
        introspected = httpx.post(
            f"{live_api.url}/v1/introspect",
            data={"token": credential["token"]},
            headers={"Authorization": f"Bearer {live_api.server_key}"},
        )
        assert introspected.status_code == 200
        done = c.post(f"/v1/requests/{request['id']}/complete", json={"outcome": "succeeded"})
        assert done.json()["status"] == "completed"


def test_recorded_exactly_as_a_separate_claim(live_api: LiveApi) -> None:
    with live_api.client() as c:
        two = c.post("/v1/requests", json=READ).json()
        c.post(f"/v1/requests/{two['id']}/credential").raise_for_status()
        one = c.post("/v1/requests", json=READ | {"claim": True}).json()
    separate, inline = audit_of(live_api, two["id"]), audit_of(live_api, one["id"])
    assert [kind for kind, _ in inline] == [kind for kind, _ in separate]
    assert [kind for kind, _ in inline][-1] == "credential.issued"
    issued = dict(inline)["credential.issued"]
    assert set(issued) == set(dict(separate)["credential.issued"])
    with live_api.engine.db.read() as session:
        rows = {
            r.request_id: r
            for r in session.execute(select(CredentialRow)).scalars()
            if r.request_id in (one["id"], two["id"])
        }
    assert rows[one["id"]].jti == one["credential"]["jti"]
    assert (rows[one["id"]].agent_id, rows[one["id"]].scope) == (
        rows[two["id"]].agent_id,
        rows[two["id"]].scope,
    )


@pytest.mark.parametrize(("body", "status"), [(RESTART, "pending"), (DROP, "denied")])
def test_pending_or_denied_answer_as_without_claim(
    live_api: LiveApi, body: dict[str, Any], status: str
) -> None:
    with live_api.client() as c:
        answer = c.post("/v1/requests", json=body | {"claim": True})
    assert answer.status_code == 201
    assert answer.json()["status"] == status and "credential" not in answer.json()
    assert count(live_api, CredentialRow) == 0


def test_a_replayed_idempotency_key_does_not_return_the_token_again(live_api: LiveApi) -> None:
    headers = {"Idempotency-Key": "k-one-trip"}
    with live_api.client() as c:
        first = c.post("/v1/requests", json=READ | {"claim": True}, headers=headers)
        again = c.post("/v1/requests", json=READ | {"claim": True}, headers=headers)
    assert first.status_code == 201 and "token" in first.json()["credential"]
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "active" and "token" not in again.json()["credential"]
    assert count(live_api, CredentialRow) == 1


def test_a_bad_key_with_claim_writes_nothing(live_api: LiveApi) -> None:
    entries = count(live_api, AuditRow)
    with live_api.client("stpa_unknown") as c:
        assert c.post("/v1/requests", json=READ | {"claim": True}).status_code == 401
    assert count(live_api, RequestRow) == 0 and count(live_api, AuditRow) == entries


def test_claim_must_be_a_boolean(live_api: LiveApi) -> None:
    with live_api.client() as c:
        answer = c.post("/v1/requests", json=READ | {"claim": "yes please"})
    assert answer.status_code == 422 and "claim" in answer.text
    assert count(live_api, RequestRow) == 0


@contextmanager
def transactions(live_api: LiveApi) -> Iterator[list[list[str]]]:
    """The statements of each transaction the server opens meanwhile that touches a request,
    a credential or an agent (the audit chain's own upkeep, if any, is not the call's work)."""
    opened: list[list[str]] = []
    current: dict[int, list[str]] = {}
    engine = live_api.engine.db.engine

    def on_begin(conn: Any) -> None:
        current[id(conn)] = []
        opened.append(current[id(conn)])

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if id(conn) in current:
            current[id(conn)].append(statement)

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    work: list[list[str]] = []
    try:
        yield work
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_statement)
        tables = ("requests", "credentials", "agents")
        work.extend(
            statements
            for statements in opened
            if any(f" {table}" in s for s in statements for table in tables)
        )


def test_claim_complete_and_one_trip_submit_are_one_transaction_each(live_api: LiveApi) -> None:
    """The caller's key is checked in the transaction of the work: a claim, a complete, a
    cancel, a submit with claim or with an Idempotency-Key (and its replay) each open one
    transaction, and the built-in JWT's
    revocation is settled in the complete's (no later pass)."""
    with live_api.client() as c:
        request = c.post("/v1/requests", json=READ).json()
        with transactions(live_api) as claim_tx:
            c.post(f"/v1/requests/{request['id']}/credential").raise_for_status()
        with transactions(live_api) as complete_tx:
            c.post(
                f"/v1/requests/{request['id']}/complete", json={"outcome": "succeeded"}
            ).raise_for_status()
        with transactions(live_api) as one_trip_tx:
            c.post("/v1/requests", json=READ | {"claim": True}).raise_for_status()
        pending = c.post("/v1/requests", json=RESTART).json()
        with transactions(live_api) as cancel_tx:
            c.post(f"/v1/requests/{pending['id']}/cancel").raise_for_status()
        with transactions(live_api) as read_tx:
            c.get(f"/v1/requests/{pending['id']}").raise_for_status()
        keyed = {"Idempotency-Key": "k-one-tx"}
        with transactions(live_api) as keyed_tx:
            c.post("/v1/requests", json=READ, headers=keyed).raise_for_status()
        with transactions(live_api) as replay_tx:
            assert c.post("/v1/requests", json=READ, headers=keyed).status_code == 200
    assert (len(keyed_tx), len(replay_tx)) == (1, 1)  # key, lookup and insert in one
    assert (len(claim_tx), len(complete_tx), len(one_trip_tx)) == (1, 1, 1)
    assert (len(cancel_tx), len(read_tx)) == (1, 1)
    with live_api.engine.db.read() as session:
        (revocation,) = session.execute(
            select(RevocationRow).where(RevocationRow.request_id == request["id"])
        ).scalars()
    assert revocation.status == "done" and revocation.attempts == 1
    kinds = [kind for kind, _ in audit_of(live_api, request["id"])]
    assert kinds[-2:] == ["credential.revoked", "credential.issuer_revoked"] or kinds[-3:-1] == [
        "credential.revoked",
        "credential.issuer_revoked",
    ]
    assert live_api.engine.service.process_revocations(now=datetime.now(UTC)) == 0


class Counting(httpx.HTTPTransport):
    """A real transport that remembers each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def test_the_clients_gated_call_is_one_round_trip_then_complete(live_api: LiveApi) -> None:
    from stepup_client import StepupClient
    from stepup_client.gating import gated

    transport = Counting()
    with (
        StepupClient(live_api.url, live_api.agent_key, transport=transport) as client,
        gated(
            client, "db.query", "read", "orders-db", "staging", "look", timeout=5, parameters={}
        ) as credential,
    ):
        assert credential.is_dpop_bound  # the client's default: a DPoP proof on the claim
        request_id = credential.request_id
        assert verified(live_api, credential.token)["cnf"]["jkt"]
    assert [line.split(" ")[0] for line in transport.sent] == ["POST", "POST"]
    assert transport.sent[0] == "POST /v1/requests"
    assert transport.sent[1] == f"POST /v1/requests/{request_id}/complete"
    assert live_api.engine.service.get(request_id).status.value == "completed"


def test_a_replayed_dpop_proof_on_submit_with_claim_records_nothing(live_api: LiveApi) -> None:
    from stepup_client.dpop import DpopKey

    key = DpopKey()
    proof = key.proof("POST", f"{live_api.url}/v1/requests")
    with live_api.client() as c:
        first = c.post("/v1/requests", json=READ | {"claim": True}, headers={"DPoP": proof})
        assert first.status_code == 201 and first.json()["credential"]["token_type"] == "DPoP"
        requests_before, entries_before = count(live_api, RequestRow), count(live_api, AuditRow)
        again = c.post("/v1/requests", json=READ | {"claim": True}, headers={"DPoP": proof})
    assert again.status_code == 400 and "already used" in again.json()["detail"]
    assert count(live_api, RequestRow) == requests_before
    assert count(live_api, AuditRow) == entries_before


class OlderServer(Counting):
    """A real server behind a transport that answers like a server from before one-round-trip
    submits: a body with ``claim`` is refused 422 naming the field, as its strict input did."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/requests" and b'"claim"' in request.content:
            self.sent.append("422 claim")
            problem = {
                "type": "https://stepup.dev/problems/validation-failed",
                "title": "Invalid input",
                "status": 422,
                "detail": "claim: Extra inputs are not permitted",
                "errors": [{"field": "claim", "message": "Extra inputs are not permitted"}],
            }
            return httpx.Response(
                422, json=problem, headers={"content-type": "application/problem+json"}
            )
        return super().handle_request(request)


def test_the_client_claims_apart_from_a_server_without_one_round_trips(live_api: LiveApi) -> None:
    from stepup_client import StepupClient
    from stepup_client.gating import gated

    transport = OlderServer()
    with StepupClient(live_api.url, live_api.agent_key, transport=transport) as client:
        for _ in range(2):
            with gated(
                client, "db.query", "read", "orders-db", "staging", "look", timeout=5
            ) as credential:
                assert credential.token
    # Refused once, then remembered: submit, claim and complete apart.
    assert transport.sent.count("422 claim") == 1
    assert sum(1 for line in transport.sent if line.endswith("/credential")) == 2


class TamperedDigest(Counting):
    """The submit's answer altered on its way back (a proxy, a bug): another digest."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path != "/v1/requests" or response.status_code != 201:
            return response
        body = json.loads(response.read())
        body["parameters_digest"] = "sha256:" + "0" * 64
        return httpx.Response(201, json=body)


def test_a_claimed_request_whose_digest_does_not_match_is_withdrawn(live_api: LiveApi) -> None:
    from stepup_client import StepupClient
    from stepup_client.errors import ParametersMismatch

    with (
        StepupClient(live_api.url, live_api.agent_key, transport=TamperedDigest()) as client,
        pytest.raises(ParametersMismatch) as raised,
    ):
        client.submit("db.query", "read", "orders-db", "staging", "look", claim=True)
    request = live_api.engine.service.get(raised.value.request_id)
    # Active with a live credential nobody holds: completed as aborted, which revokes it.
    assert request.status.value == "completed" and request.outcome == "aborted"
    assert request.credential is not None and request.credential.revoked_at is not None


def test_a_replayed_answer_without_its_credential_is_withdrawn_and_submitted_again(
    live_api: LiveApi,
) -> None:
    """A retry that replays a submit whose answer (and token) was lost: that session is
    completed as aborted, which revokes the credential nobody holds, and the intent submitted
    once more (under a fresh key), to be claimed the usual way."""
    from stepup_client import StepupClient
    from stepup_client.gating import submit_claiming

    fields = ("db.query", "read", "orders-db", "staging", "look")
    with StepupClient(live_api.url, live_api.agent_key) as client:
        first = client.submit(*fields, claim=True, idempotency_key="k-lost")
        assert first.claimed is not None  # this answer is the one "lost"
        again = submit_claiming(client, *fields, idempotency_key="k-lost")
    assert again.id != first.id and again.status.value == "approved" and again.claimed is None
    lost = live_api.engine.service.get(first.id)
    assert lost.status.value == "completed" and lost.outcome == "aborted"
    assert lost.credential is not None and lost.credential.revoked_at is not None
