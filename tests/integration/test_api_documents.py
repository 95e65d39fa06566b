"""The answers the API builds by hand agree with the models its OpenAPI document declares.

The request routes answer ``request_json`` as built, without FastAPI validating it against
``RequestView``; here every status is reached over HTTP and each answer must validate and
dump back unchanged (an undeclared key, a missing one or a changed type all fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.api.schemas import (
    ClaimAnswer,
    ClaimedCredential,
    Introspection,
    Jwks,
    Problem,
    RequestView,
    SubmitAnswer,
)
from core.model import Approver, Status, Vote
from core.storage.database import Database
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads: { slack_users: [U0ALICE, U0BOB] }
channels: { approvals: C0APPROVALS }
rules:
  - name: never-drop-prod-db
    match: { action: "db.drop_database", environment: production }
    decision: deny
    reason: Dropping a production database is never automated
  - name: prod-destructive
    match: { environment: production, action_class: destructive }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
  - name: prod-secrets
    match: { environment: production, action_class: secret_read }
    decision: approve
    approvers: sre-leads
    channel: approvals
    break_glass: true
    break_glass_ttl: 2m
  - name: reads
    match: { action_class: read }
    decision: allow
"""
ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
RESTART = {  # production destructive: one approval from sre-leads
    "action": "k8s.rollout_restart",
    "action_class": "destructive",
    "target": "payments-api",
    "environment": "production",
    "justification": "deploy fix for INC-42",
    "parameters": {"replicas": 3},
}
READ = RESTART | {"action": "db.query", "action_class": "read"}
DROP = RESTART | {"action": "db.drop_database"}
UNMATCHED = RESTART | {"action": "cache.flush", "action_class": "write", "environment": "staging"}
SECRET = RESTART | {"action": "vault.read", "action_class": "secret_read", "break_glass": True}


@dataclass
class Api:
    url: str
    engine: Engine
    agent: httpx.Client
    server: httpx.Client
    seen: list[dict[str, Any]] = field(default_factory=list)

    def checked(self, response: httpx.Response, status_code: int = 200) -> dict[str, Any]:
        """A request answer, after proving it is exactly a ``RequestView``."""
        assert response.status_code == status_code, response.text
        assert response.headers["content-type"] == "application/json"
        body: dict[str, Any] = response.json()
        assert_exactly(RequestView, body)
        self.seen.append(body)
        return body

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.checked(self.agent.post("/v1/requests", json=body), 201)

    def get(self, request_id: str) -> dict[str, Any]:
        return self.checked(self.agent.get(f"/v1/requests/{request_id}"))


def assert_exactly(model: type[BaseModel], body: dict[str, Any]) -> None:
    """``body`` validates as ``model`` and dumps back to itself: no key is undeclared, no
    declared key missing, no value coerced (timestamps included)."""
    assert model.model_validate(body).model_dump(mode="json", exclude_unset=True) == body


@pytest.fixture
def api(db: Database, tmp_path: Path) -> Iterator[Api]:
    engine = build_engine(db, tmp_path, POLICY)
    now = datetime.now(UTC)
    agent_key = engine.registry.add("deploy-bot", OWNER, by="test", now=now)
    server_key = engine.registry.add_resource_server("payments-api", by="test", now=now)
    app = create_app(ApiContext(service=engine.service, registry=engine.registry))
    with (
        running(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {agent_key}"}) as agent,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {server_key}"}) as server,
    ):
        yield Api(url, engine, agent, server)


def test_every_status_answers_exactly_the_declared_request_model(api: Api) -> None:
    service = api.engine.service
    # Expired first: the sweep expires every overdue request, so nothing else exists yet.
    stale = api.submit(RESTART)
    service.expire_due(now=datetime.now(UTC) + timedelta(hours=1))
    assert api.get(stale["id"])["status"] == "expired"

    allowed = api.submit(READ)
    assert (allowed["status"], allowed["rule"]) == ("approved", "reads")
    claim = api.agent.post(f"/v1/requests/{allowed['id']}/credential")
    assert claim.status_code == 200
    assert_exactly(ClaimAnswer, claim.json())
    # Submit with claim: the request view, its credential carrying the claim answer's fields.
    one_trip = api.agent.post("/v1/requests", json=READ | {"claim": True})
    assert one_trip.status_code == 201 and one_trip.json()["status"] == "active"
    assert_exactly(SubmitAnswer, one_trip.json())
    assert set(one_trip.json()["credential"]) == set(ClaimedCredential.model_fields) - {"secret"}
    active = api.get(allowed["id"])
    assert active["status"] == "active" and active["credential"]["revoked_at"] is None
    token = claim.json()["token"]
    introspected = api.server.post("/v1/introspect", data={"token": token}).json()
    assert introspected["active"] is True
    assert_exactly(Introspection, introspected)
    # Validated on the way out, so compare with what core built: nothing may be dropped.
    assert introspected == service.introspect(token, now=datetime.now(UTC))
    done = api.checked(
        api.agent.post(
            f"/v1/requests/{allowed['id']}/complete", json={"outcome": "failed", "detail": "x"}
        )
    )
    assert done["status"] == "completed" and done["credential"]["revoked_at"] is not None
    assert (done["outcome"], done["outcome_detail"]) == ("failed", "x")

    by_rule = api.submit(DROP)
    assert (by_rule["status"], by_rule["rule"]) == ("denied", "never-drop-prod-db")
    by_default = api.submit(UNMATCHED)
    assert (by_default["status"], by_default["rule"]) == ("denied", None)

    pending = api.submit(RESTART)
    assert pending["status"] == "pending" and pending["approvals"]["required"] == 1
    service.vote(pending["id"], ALICE, Vote.APPROVE, now=datetime.now(UTC))
    approved = api.get(pending["id"])
    assert approved["status"] == "approved"
    assert approved["approvals"]["approvers"][0]["email"] == "alice@example.com"
    assert api.agent.post(f"/v1/requests/{pending['id']}/credential").status_code == 200
    service.revoke(pending["id"], by="alice@example.com", reason="test", now=datetime.now(UTC))
    assert api.get(pending["id"])["status"] == "revoked"

    cancelled = api.submit(RESTART)
    path = f"/v1/requests/{cancelled['id']}/cancel"
    assert api.checked(api.agent.post(path))["status"] == "cancelled"

    glass = api.submit(SECRET)
    assert glass["status"] == "approved" and glass["break_glass_review"] == {
        "reviewed_at": None,
        "reviewed_by": None,
    }
    service.review_break_glass(glass["id"], ALICE, now=datetime.now(UTC))
    assert api.get(glass["id"])["break_glass_review"]["reviewed_by"] == "alice@example.com"

    # Every status, and every optional part, was among the answers checked.
    assert {body["status"] for body in api.seen} == {status.value for status in Status}
    assert all(
        any(key in body for body in api.seen) for key in ("credential", "break_glass_review")
    )


def test_problems_and_keys_answer_exactly_the_declared_models(api: Api) -> None:
    cancelled = api.submit(RESTART)
    api.agent.post(f"/v1/requests/{cancelled['id']}/cancel")
    answers = {
        401: httpx.post(f"{api.url}/v1/requests", json=READ),
        404: api.agent.get("/v1/requests/req_missing"),
        409: api.agent.post(f"/v1/requests/{cancelled['id']}/cancel"),
        413: api.agent.post("/v1/requests", content=b"x" * 70_000),
        422: api.agent.post("/v1/requests", json=READ | {"action_class": "bogus"}),
    }
    for status_code, response in answers.items():
        assert response.status_code == status_code
        assert response.headers["content-type"] == "application/problem+json"
        assert_exactly(Problem, response.json())
    assert answers[409].json()["current_status"] == "cancelled"
    assert answers[422].json()["errors"][0]["field"] == "action_class"

    inactive = api.server.post("/v1/introspect", data={"token": "not-a-token"})
    assert inactive.json() == {"active": False}
    keys = api.agent.get("/.well-known/jwks.json").json()
    assert_exactly(Jwks, keys)
    assert keys == api.engine.keyring.jwks()  # validated on the way out: nothing dropped


def test_the_document_declares_these_models_and_problem_media_type(api: Api) -> None:
    document = httpx.get(f"{api.url}/openapi.json").json()
    view = {"$ref": "#/components/schemas/RequestView"}
    problem = {"$ref": "#/components/schemas/Problem"}
    requests = {
        ("post", "/v1/requests"): "201",
        ("get", "/v1/requests/{request_id}"): "200",
        ("post", "/v1/requests/{request_id}/complete"): "200",
        ("post", "/v1/requests/{request_id}/cancel"): "200",
    }
    for (method, path), ok in requests.items():
        responses = document["paths"][path][method]["responses"]
        declared = responses[ok]["content"]["application/json"]["schema"]
        if path == "/v1/requests":  # a request view whose credential may carry the token
            assert declared == {"$ref": "#/components/schemas/SubmitAnswer"}
            schemas = document["components"]["schemas"]
            assert set(schemas["SubmitAnswer"]["properties"]) == set(
                schemas["RequestView"]["properties"]
            )
        else:
            assert declared == view
        errors = {code: r for code, r in responses.items() if int(code) >= 400}
        assert {"401", "404", "422"} <= errors.keys()
        for answer in errors.values():
            assert answer["content"] == {"application/problem+json": {"schema": problem}}
    submit = document["paths"]["/v1/requests"]["post"]["responses"]
    assert submit["200"]["content"]["application/json"]["schema"] == view  # a replayed key
    assert all("Location" in submit[ok]["headers"] for ok in ("200", "201"))
    assert "HTTPValidationError" not in document["components"]["schemas"]
