"""RFC 8693 token exchange at ``POST /v1/token`` over the real HTTP API, on both databases.

The orchestrator's active credential (the subject token) and the worker's own token (the actor
token) buy the worker a child credential under the orchestrator's delegation, when the policy
pre-authorises the child. Attacks: a scope or audience wider than the delegation (refused,
naming it), no delegation to this actor, a revoked or forged subject token, a bad actor token
(401, the bad-key text), a child the policy would send to people (refused, nothing written),
repeated parameters, the wrong grant type. The child's lifetime is capped by what remains of
the parent's, and an exchanged child may delegate and exchange again: ``act`` nests.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from core.agents import WorkloadBinding
from core.identity.registry import TrustRegistry
from core.identity.workload import WorkloadVerifier
from core.model import Status
from core.storage import identity_repo
from core.storage.tables import AuditRow, RequestRow
from tests.conftest import T0
from tests.integration.test_cli import Cli
from tests.integration.test_delegation import (
    World,
    claims_of,
    cli,
    cli_db,
    delegation_to_helper,
    delegation_to_worker,
    world,
)
from tests.integration.workload_tokens import serving
from tests.support import OWNER

__all__ = ["cli", "cli_db", "world"]  # fixtures

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def exchange(world: World, subject: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": GRANT,
        "subject_token": subject,
        "subject_token_type": JWT,
        "actor_token": world.keys["worker"],
        "actor_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "scope": "deploy.web",
        "audience": "payments/web",
    } | overrides
    with httpx.Client(base_url=world.url, timeout=30) as http:
        return http.post("/v1/token", data=form)


def delegated_parent(world: World) -> tuple[str, dict[str, Any]]:
    parent, credential = world.active("orchestrator")
    assert delegation_to_worker(world, parent).status_code == 201
    return parent, credential


def test_an_exchange_within_the_delegation_gets_a_child_credential(world: World) -> None:
    parent, credential = delegated_parent(world)
    answer = exchange(world, credential["token"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("Bearer", "deploy.web", 300)
    claims = claims_of(body["access_token"])
    assert (claims["sub"], claims["act"], claims["parent_request_id"]) == (
        "orchestrator",
        {"sub": "worker"},
        parent,
    )
    assert claims["aud"] == "payments/web"
    child = world.engine.service.get(body["request_id"])
    assert (child.agent_id, child.status, child.parent_request_id) == (
        "worker",
        Status.ACTIVE,
        parent,
    )
    assert child.delegation_id is not None
    with world.engine.db.read() as session:
        kinds = [
            row.kind
            for row in session.query(AuditRow).filter(AuditRow.request_id == child.id).all()
        ]
    assert kinds[-1] == "token.exchanged"
    assert "credential.issued" in kinds
    # the parent's end takes the exchanged child with it
    world.engine.service.revoke(parent, by="admin@example.com", reason="x", now=world.clock.now)
    assert world.engine.service.get(child.id).status is Status.REVOKED


def test_an_exchange_near_the_parents_end_gets_only_the_parents_remaining_time(
    world: World,
) -> None:
    """The delegation allows an hour, the parent has 2 of its 10 minutes left: the child gets
    2 minutes and ends with the parent, to the second."""
    parent, credential = world.active("orchestrator")  # 10 minutes from T0
    assert delegation_to_worker(world, parent, max_ttl="1h").status_code == 201
    world.clock.now = T0 + timedelta(minutes=8)
    answer = exchange(world, credential["token"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == 120
    claims = claims_of(answer.json()["access_token"])
    assert claims["exp"] == claims_of(credential["token"])["exp"]
    assert claims["exp"] - claims["iat"] == 120
    child = world.engine.service.get(answer.json()["request_id"])
    assert child.credential is not None
    assert child.credential.expires_at == T0 + timedelta(minutes=10)


def test_a_second_level_exchange_nests_act_under_the_first_actor(world: World) -> None:
    """orchestrator → worker (exchange) → helper (exchange on the worker's child token): the
    helper's token keeps the root as ``sub``, and ``act`` names the helper, acting for the
    worker, as RFC 8693 section 4.1 nests it."""
    _, credential = delegated_parent(world)
    first = exchange(world, credential["token"])
    assert first.status_code == 200, first.text
    middle = first.json()["request_id"]
    made = delegation_to_helper(world, middle)
    assert made.status_code == 201, made.text
    assert made.json()["depth"] == 2
    second = exchange(
        world,
        first.json()["access_token"],
        actor_token=world.keys["helper"],
        scope="deploy.web.canary",
        audience="payments/web/canary",
    )
    assert second.status_code == 200, second.text
    claims = claims_of(second.json()["access_token"])
    assert claims["sub"] == "orchestrator"
    assert claims["act"] == {"sub": "helper", "act": {"sub": "worker"}}
    assert claims["parent_request_id"] == middle
    assert (claims["scope"], claims["aud"]) == ("deploy.web.canary", "payments/web/canary")
    leaf = world.engine.service.get(second.json()["request_id"])
    assert (leaf.agent_id, leaf.status, leaf.parent_request_id) == (
        "helper",
        Status.ACTIVE,
        middle,
    )


def test_an_exchange_wider_than_the_delegation_is_refused_naming_it(world: World) -> None:
    _, credential = delegated_parent(world)
    wide_scope = exchange(world, credential["token"], scope="db.drop")
    assert wide_scope.status_code == 400
    assert wide_scope.json()["error"] == "invalid_scope"
    assert wide_scope.json()["error_description"].startswith("scope:")
    wide_audience = exchange(world, credential["token"], audience="orders")
    assert wide_audience.status_code == 400
    assert wide_audience.json()["error"] == "invalid_target"
    assert wide_audience.json()["error_description"].startswith("audience:")
    with world.engine.db.read() as session:
        assert session.query(RequestRow).filter(RequestRow.agent_id == "worker").count() == 0


def test_an_exchange_the_policy_does_not_pre_authorise_writes_nothing(world: World) -> None:
    _, credential = delegated_parent(world)
    refused = exchange(world, credential["token"], audience="payments/web/secrets")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert "pre-authorise" in refused.json()["error_description"]
    with world.engine.db.read() as session:
        assert session.query(RequestRow).filter(RequestRow.agent_id == "worker").count() == 0


def test_an_exchange_under_a_rule_that_requires_dpop_writes_nothing(world: World) -> None:
    _, credential = delegated_parent(world)
    refused = exchange(world, credential["token"], scope="deploy.db", audience="payments/db")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")
    assert "DPoP" in refused.json()["error_description"]
    with world.engine.db.read() as session:
        assert session.query(RequestRow).filter(RequestRow.agent_id == "worker").count() == 0


def test_an_actor_without_a_delegation_is_refused(world: World) -> None:
    _, credential = delegated_parent(world)
    refused = exchange(world, credential["token"], actor_token=world.keys["outsider"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"


def test_a_bad_actor_token_is_401_with_the_bad_key_text(world: World) -> None:
    _, credential = delegated_parent(world)
    refused = exchange(world, credential["token"], actor_token="stpa_not-a-key")
    assert refused.status_code == 401
    assert refused.json() == {
        "error": "invalid_client",
        "error_description": "invalid or missing credentials",
    }
    with httpx.Client(base_url=world.url, timeout=30) as http:
        bad_key = http.get("/v1/requests/x", headers={"Authorization": "Bearer stpa_nope"})
    assert bad_key.json()["detail"] == refused.json()["error_description"]


def test_a_dead_or_forged_subject_token_is_refused(world: World) -> None:
    parent, credential = delegated_parent(world)
    token = credential["token"]
    head, payload, signature = token.split(".")
    forged = exchange(world, f"{head}.{payload}.{signature[:-4]}AAAA")
    assert forged.status_code == 400
    assert forged.json() == {
        "error": "invalid_request",
        "error_description": "invalid subject_token",
    }
    with world.client("orchestrator") as http:
        http.post(f"/v1/requests/{parent}/complete", json={"outcome": "succeeded"})
    dead = exchange(world, token)
    assert dead.status_code == 400
    assert dead.json()["error_description"] == "invalid subject_token"


def test_malformed_exchanges_are_refused_in_oauth_terms(world: World) -> None:
    _, credential = delegated_parent(world)
    token = credential["token"]
    assert exchange(world, token, grant_type="password").json()["error"] == (
        "unsupported_grant_type"
    )
    assert exchange(world, token, subject_token_type="urn:x").json()["error"] == "invalid_request"
    assert exchange(world, token, resource="https://x").json()["error"] == "invalid_target"
    assert exchange(world, token, scope="deploy.web deploy").json()["error"] == "invalid_scope"
    with httpx.Client(base_url=world.url, timeout=30) as http:
        twice = http.post(
            "/v1/token",
            content=f"grant_type={GRANT}&scope=a&scope=b",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        as_json = http.post("/v1/token", json={"grant_type": GRANT})
    assert (twice.status_code, twice.json()["error"]) == (400, "invalid_request")
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")


def test_audit_verify_stays_exact_after_exchanges(world: World, cli_db: Cli) -> None:
    test_an_exchange_within_the_delegation_gets_a_child_credential(world)
    out = cli_db.invoke("audit", "verify")
    assert out.code == 0, out.stdout + out.stderr
    assert "all match" in out.stdout


def test_the_actor_token_may_be_the_childs_workload_jwt(world: World) -> None:
    """The issue's case: the child proves itself with its OIDC token, no static key."""
    db = world.engine.db
    verifier = WorkloadVerifier(identity_repo.trust_source(db), clock=lambda: 1000.0, floor=30.0)
    world.engine.service.parts.identity = verifier
    with serving() as issuer:
        TrustRegistry(db, verifier).add_oidc(
            "k8s", issuer=issuer.url, audience="stepup", by="test", now=T0
        )
        world.engine.registry.add_keyless(
            "ci-worker",
            OWNER,
            by="test",
            now=T0,
            identities=[WorkloadBinding.oidc("k8s:system:serviceaccount:ci:worker")],
        )
        parent, credential = world.active("orchestrator")
        made = delegation_to_worker(world, parent, agent="ci-worker")
        assert made.status_code == 201, made.text
        workload = issuer.token("system:serviceaccount:ci:worker", now=T0.timestamp())
        answer = exchange(world, credential["token"], actor_token=workload, actor_token_type=JWT)
        assert answer.status_code == 200, answer.text
        claims = claims_of(answer.json()["access_token"])
        assert (claims["sub"], claims["act"]) == ("orchestrator", {"sub": "ci-worker"})
        foreign = issuer.token("system:serviceaccount:ci:other", now=T0.timestamp())
        refused = exchange(world, credential["token"], actor_token=foreign, actor_token_type=JWT)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
