"""Delegation over the real HTTP API, on SQLite and PostgreSQL (docs/delegation.md).

An orchestrator holds an active ``deploy`` on ``payments``; it delegates part of it to a
worker, which delegates part of its own to a helper. Attacks: a delegation wider than the
parent (refused naming the field), a child outside its delegation (422 naming ``action`` or
``target``), a child of someone else's request (404), a child that would outlive its parent
(the TTL is capped), a chain left alive when the top ends (all revoked in one transaction),
a delegation by a request whose rule does not allow it, one deeper than ``max_depth`` (or, on
a rule that sets none, deeper than the default 3). A child that needs people is posted to Slack
with its chain on the card.
``stepup audit verify`` stays exact after all of it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.model import Status
from core.storage.database import Database
from core.storage.tables import AuditRow
from tests.conftest import T0
from tests.integration import test_cli
from tests.integration.live import running
from tests.integration.slack_env import slack_live
from tests.integration.test_cli import Cli
from tests.support import OWNER, Engine, build_engine

cli, cli_db = test_cli.cli, test_cli.cli_db

POLICY = """\
version: 1
defaults:
  approval_timeout: 30m
  claim_window: 5m
  max_ttl: 15m
approver_groups:
  sre:
    slack_users: [U0ALICE]
channels:
  approvals: C0APPROVALS
rules:
  - name: secrets-need-people
    match: { target: "payments/*/secrets" }
    decision: approve
    approvers: sre
    channel: approvals
  - name: flat-reads
    match: { action: "report.*" }
    decision: allow
    max_ttl: 10m
  - name: bound-deploys
    match: { action: "deploy.db" }
    decision: allow
    require_dpop: true
  - name: deploys
    match: { action: ["deploy", "deploy.*"], environment: production }
    decision: allow
    max_ttl: 10m
    delegable: true
    max_depth: 2
"""


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    url: str
    engine: Engine
    clock: Clock
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, agent: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[agent]}"}, timeout=30
        )

    def submit(self, agent: str, **fields: Any) -> httpx.Response:
        body = {
            "action": "deploy",
            "action_class": "write",
            "target": "payments",
            "environment": "production",
            "justification": "ship the fix",
        } | fields
        with self.client(agent) as http:
            return http.post("/v1/requests", json=body)

    def claim(self, agent: str, request_id: str) -> dict[str, Any]:
        with self.client(agent) as http:
            answer = http.post(f"/v1/requests/{request_id}/credential")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def delegate(self, by: str, request_id: str, **body: Any) -> httpx.Response:
        with self.client(by) as http:
            return http.post(f"/v1/requests/{request_id}/delegations", json=body)

    def active(self, agent: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        answer = self.submit(agent, **fields)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "approved"
        return answer.json()["id"], self.claim(agent, answer.json()["id"])


@contextmanager
def world_of(
    db: Database, tmp_path: Path, policy: str = POLICY, *, more: tuple[str, ...] = ()
) -> Iterator[World]:
    """The API on ``policy``, with the four agents (and ``more``) and the payments server."""
    engine = build_engine(db, tmp_path, policy)
    clock = Clock()
    keys = {
        name: engine.registry.add(name, OWNER, by="test", now=T0)
        for name in ("orchestrator", "worker", "helper", "outsider", *more)
    }
    engine.registry.add_resource_server(
        "payments-api", by="test", now=T0, audiences=["payments", "payments/web"]
    )
    context = ApiContext(service=engine.service, registry=engine.registry, clock=clock)
    with running(create_app(context)) as url:
        yield World(url, engine, clock, keys)


@pytest.fixture
def world(db: Database, tmp_path: Path) -> Iterator[World]:
    with world_of(db, tmp_path) as made:
        yield made


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return value


def delegation_to_worker(world: World, parent: str, **overrides: Any) -> httpx.Response:
    body = {
        "agent": "worker",
        "actions": ["deploy", "deploy.*"],
        "targets": ["payments/*"],
        "max_ttl": "5m",
    } | overrides
    return world.delegate("orchestrator", parent, **body)


def delegation_to_helper(world: World, middle: str) -> httpx.Response:
    """The worker's delegation of its own request ``middle`` to helper, one level down."""
    return world.delegate(
        "worker",
        middle,
        agent="helper",
        actions=["deploy.web.*"],
        targets=["payments/web/*"],
        max_ttl="5m",
    )


def second_level(world: World, root: str) -> str:
    """Under the orchestrator's active ``root``: the worker's sub-request, claimed, and
    delegated on to helper; the sub-request's id."""
    assert delegation_to_worker(world, root).status_code == 201
    middle: str = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=root
    ).json()["id"]
    world.claim("worker", middle)
    made = delegation_to_helper(world, middle)
    assert made.status_code == 201, made.text
    assert made.json()["depth"] == 2
    return middle


def pending_leaf(world: World, middle: str) -> str:
    """Helper's sub-request under ``middle`` that the secrets rule sends to people; its id."""
    waiting = world.submit(
        "helper",
        action="deploy.web.canary",
        target="payments/web/secrets",
        parent_request_id=middle,
    )
    assert waiting.status_code == 201, waiting.text
    assert waiting.json()["status"] == "pending"
    leaf: str = waiting.json()["id"]
    return leaf


def test_a_child_within_its_delegation_gets_the_chain_in_its_token(world: World) -> None:
    parent, _ = world.active("orchestrator")
    made = delegation_to_worker(world, parent)
    assert made.status_code == 201, made.text
    delegation = made.json()
    assert delegation["id"].startswith("dlg_")
    assert delegation | {"id": "", "created_at": ""} == {
        "id": "",
        "parent_request_id": parent,
        "agent": "worker",
        "actions": ["deploy", "deploy.*"],
        "targets": ["payments/*"],
        "max_ttl": "5m",
        "max_ttl_seconds": 300,
        "depth": 1,
        "created_at": "",
    }
    child = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=parent
    )
    assert child.status_code == 201, child.text
    assert child.json()["status"] == "approved"  # the policy still decided: the rule allows it
    assert child.json()["parent_request_id"] == parent
    credential = world.claim("worker", child.json()["id"])
    claims = claims_of(credential["token"])
    assert claims["sub"] == "orchestrator"
    assert claims["act"] == {"sub": "worker"}
    assert claims["parent_request_id"] == parent
    assert (claims["scope"], claims["aud"]) == ("deploy.web", "payments/web")
    assert claims["exp"] - claims["iat"] == 300  # the delegation's max_ttl, under the rule's 10m
    # introspection: the holder is the worker, the subject the root: active as issued
    with httpx.Client(
        base_url=world.url,
        headers={"Authorization": f"Bearer {server_key(world)}"},
        timeout=30,
    ) as http:
        seen = http.post("/v1/introspect", data={"token": credential["token"]}).json()
    assert seen["active"] is True
    assert (seen["sub"], seen["act"], seen["parent_request_id"]) == (
        "orchestrator",
        {"sub": "worker"},
        parent,
    )


def server_key(world: World) -> str:
    if "server" not in world.keys:
        world.keys["server"] = world.engine.registry.add_resource_server(
            "introspector", by="test", now=T0, audiences=["payments/web"]
        )
    return world.keys["server"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"actions": ["*"]}, "actions"),
        ({"actions": ["deploy*"]}, "actions"),  # deployX is not under deploy
        ({"actions": ["db.drop"]}, "actions"),
        ({"targets": ["pay*"]}, "targets"),
        ({"targets": ["orders/*"]}, "targets"),
        ({"targets": ["*/payments"]}, "targets"),
        ({"agent": "nobody"}, "agent"),
        ({"agent": "orchestrator"}, "agent"),
        ({"max_ttl": "forever"}, "max_ttl"),
    ],
)
def test_a_delegation_wider_than_its_parent_is_refused_naming_the_field(
    world: World, overrides: dict[str, Any], named: str
) -> None:
    parent, _ = world.active("orchestrator")
    refused = delegation_to_worker(world, parent, **overrides)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert named in refused.json()["detail"].split(":")[0] or any(
        error["field"] == named for error in refused.json().get("errors", [])
    )


def test_only_the_agent_of_an_active_delegable_request_may_delegate(world: World) -> None:
    parent, _ = world.active("orchestrator")
    assert (
        world.delegate(
            "outsider",
            parent,
            agent="worker",
            actions=["deploy"],
            targets=["payments"],
            max_ttl="1m",
        ).status_code
        == 404
    )
    flat, _ = world.active("orchestrator", action="report.daily", action_class="read")
    refused = world.delegate(
        "orchestrator",
        flat,
        agent="worker",
        actions=["report.daily"],
        targets=["payments"],
        max_ttl="1m",
    )
    assert refused.status_code == 409
    assert "delegable" in refused.json()["detail"]
    unclaimed = world.submit("orchestrator").json()["id"]
    assert delegation_to_worker(world, unclaimed).status_code == 409  # approved, not active


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"action": "db.drop"}, "action"),
        ({"action": "deployer"}, "action"),
        ({"target": "orders"}, "target"),
        ({"target": "payments"}, "target"),  # the parent's target, but not in payments/*
        ({"environment": "staging"}, "environment"),
    ],
)
def test_a_child_outside_its_delegation_is_refused_naming_the_field(
    world: World, fields: dict[str, Any], named: str
) -> None:
    parent, _ = world.active("orchestrator")
    assert delegation_to_worker(world, parent).status_code == 201
    body = {"action": "deploy.web", "target": "payments/web", "parent_request_id": parent}
    refused = world.submit("worker", **(body | fields))
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(f"{named}:")
    with world.engine.db.read() as session:
        assert session.query(AuditRow).filter(AuditRow.actor == "worker").count() == 0


def test_no_delegation_no_child(world: World) -> None:
    parent, _ = world.active("orchestrator")
    delegation_to_worker(world, parent)
    stranger = world.submit(
        "outsider", action="deploy.web", target="payments/web", parent_request_id=parent
    )
    assert stranger.status_code == 404  # as if the parent did not exist


def test_a_child_token_never_outlives_its_parent(world: World) -> None:
    parent, credential = world.active("orchestrator")  # 10 minutes from T0
    assert delegation_to_worker(world, parent, max_ttl="1h").status_code == 201
    world.clock.now = T0 + timedelta(minutes=8)
    child = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=parent
    ).json()["id"]
    claims = claims_of(world.claim("worker", child)["token"])
    assert claims["exp"] == claims_of(credential["token"])["exp"]
    assert claims["exp"] - claims["iat"] == 120


def test_a_three_level_chain_is_revoked_in_one_step_from_the_top(world: World) -> None:
    root, _ = world.active("orchestrator")
    middle = second_level(world, root)
    leaf = world.submit(
        "helper",
        action="deploy.web.canary",
        target="payments/web/canary",
        parent_request_id=middle,
    ).json()["id"]
    leaf_claims = claims_of(world.claim("helper", leaf)["token"])
    assert leaf_claims["sub"] == "orchestrator"
    assert leaf_claims["act"] == {"sub": "helper", "act": {"sub": "worker"}}
    assert leaf_claims["parent_request_id"] == middle
    # a fourth level is deeper than the rule's max_depth: 2
    too_deep = world.delegate(
        "helper",
        leaf,
        agent="outsider",
        actions=["deploy.web.canary"],
        targets=["payments/web/canary"],
        max_ttl="1m",
    )
    assert too_deep.status_code == 409
    assert "max_depth" in too_deep.json()["detail"]
    # a pending descendant (the secrets rule asks people) is cancelled with the rest
    pending = pending_leaf(world, middle)

    service = world.engine.service
    seen: list[list[str]] = []
    service.subscribe(lambda snap: seen.append([snap.id]))
    service.revoke(root, by="admin@example.com", reason="incident", now=world.clock.now)
    ids = (root, middle, leaf, pending)
    statuses = {i: service.get(i).status for i in ids}
    assert statuses == {
        root: Status.REVOKED,
        middle: Status.REVOKED,
        leaf: Status.REVOKED,
        pending: Status.CANCELLED,
    }
    for child in ids[1:]:
        assert service.get(child).status_reason == f"ancestor request {root} ended (revoked)"
    # one transaction: one publication after one commit carried all four
    assert sorted(i for (i,) in seen) == sorted(ids)
    with world.engine.db.read() as session:
        rows = session.query(AuditRow).filter(AuditRow.request_id.in_(ids[1:])).all()
        ends = {
            row.request_id: (row.kind, json.loads(row.data)["reason"])
            for row in rows
            if row.kind in ("credential.revoked", "request.cancelled")
        }
    reason = f"ancestor request {root} ended (revoked)"
    assert ends == {
        middle: ("credential.revoked", reason),
        leaf: ("credential.revoked", reason),
        pending: ("request.cancelled", reason),
    }
    # the revoked chain's tokens are dead at introspection
    with world.client("helper") as http:
        again = http.post(
            "/v1/requests",
            json={
                "action": "deploy.web.x",
                "action_class": "write",
                "target": "payments/web/x",
                "environment": "production",
                "justification": "too late",
                "parent_request_id": middle,
            },
        )
    assert again.status_code == 409


def test_without_max_depth_a_delegable_rule_refuses_the_fourth_level(
    db: Database, tmp_path: Path
) -> None:
    """The deploys rule without ``max_depth``: three levels of delegation are granted (the
    default), the fourth is a 409 that names max_depth and writes nothing."""
    policy = POLICY.replace("    max_depth: 2\n", "")
    assert "max_depth" not in policy
    with world_of(db, tmp_path, policy, more=("fifth",)) as world:
        parent, _ = world.active("orchestrator")
        canary = ("deploy.web.canary", "payments/web/canary")
        levels = [  # who delegates to whom, within what; the child the delegate then asks for
            ("orchestrator", "worker", ["deploy", "deploy.*"], ["payments/*"], "deploy.web"),
            ("worker", "helper", ["deploy.web.*"], ["payments/web/*"], canary[0]),
            ("helper", "outsider", [canary[0]], [canary[1]], canary[0]),
        ]
        for depth, (by, to, actions, targets, action) in enumerate(levels, start=1):
            made = world.delegate(
                by, parent, agent=to, actions=actions, targets=targets, max_ttl="5m"
            )
            assert made.status_code == 201, made.text
            assert made.json()["depth"] == depth
            target = "payments/web" if depth == 1 else canary[1]
            child = world.submit(to, action=action, target=target, parent_request_id=parent)
            assert child.status_code == 201, child.text
            parent = child.json()["id"]
            world.claim(to, parent)
        with world.engine.db.read() as session:
            entries = session.query(AuditRow).count()

        too_deep = world.delegate(
            "outsider",
            parent,
            agent="fifth",
            actions=["deploy.web.canary"],
            targets=["payments/web/canary"],
            max_ttl="1m",
        )

        assert too_deep.status_code == 409, too_deep.text
        detail = too_deep.json()["detail"]
        assert "depth 4" in detail and "allows 3 (max_depth)" in detail
        with world.engine.db.read() as session:
            assert session.query(AuditRow).count() == entries


def test_completing_the_parent_ends_an_unclaimed_child(world: World) -> None:
    root, _ = world.active("orchestrator")
    delegation_to_worker(world, root)
    child = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=root
    ).json()["id"]
    with world.client("orchestrator") as http:
        done = http.post(f"/v1/requests/{root}/complete", json={"outcome": "succeeded"})
    assert done.status_code == 200
    assert world.engine.service.get(child).status is Status.REVOKED
    with world.client("worker") as http:
        assert http.post(f"/v1/requests/{child}/credential").status_code == 409


def test_audit_verify_stays_exact_after_delegation(world: World, cli_db: Cli) -> None:
    test_a_three_level_chain_is_revoked_in_one_step_from_the_top(world)
    out = cli_db.invoke("audit", "verify")
    assert out.code == 0, out.stdout + out.stderr
    assert "all match" in out.stdout


def test_a_parent_whose_ttl_runs_out_takes_its_children_with_it(world: World, cli_db: Cli) -> None:
    root, _ = world.active("orchestrator")  # 10 minutes from T0
    delegation_to_worker(world, root, max_ttl="1h")
    world.clock.now = T0 + timedelta(minutes=6)
    claimed = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=root
    ).json()["id"]
    world.claim("worker", claimed)  # capped: due with its parent, at T0 + 10m
    unclaimed = world.submit(
        "worker", action="deploy.api", target="payments/api", parent_request_id=root
    ).json()["id"]  # its claim window ends at T0 + 11m: after the parent
    service = world.engine.service
    service.expire_due(now=T0 + timedelta(minutes=10, seconds=1))
    assert [service.get(i).status for i in (root, claimed, unclaimed)] == [Status.REVOKED] * 3
    assert service.get(unclaimed).status_reason == f"ancestor request {root} ended (revoked)"
    out = cli_db.invoke("audit", "verify")
    assert out.code == 0, out.stdout + out.stderr


def test_a_delegated_request_has_no_sub_requests_of_its_own(world: World) -> None:
    """Own sub-requests of a delegated request would sit outside the delegation: no bounds, a
    new chain and depth, and the root agent gone from the token (review finding)."""
    root, _ = world.active("orchestrator")
    assert delegation_to_worker(world, root).status_code == 201
    middle = world.submit(
        "worker", action="deploy.web", target="payments/web", parent_request_id=root
    ).json()["id"]
    world.claim("worker", middle)

    refused = world.submit("worker", action="deploy", target="payments", parent_request_id=middle)

    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("parent_request_id: ")


def test_a_sub_request_needs_a_live_parent(world: World) -> None:
    """Under an ended parent a child would escape every cascade (review finding)."""
    own, _ = world.active("worker", action="deploy", target="payments")
    with world.client("worker") as c:
        done = c.post(f"/v1/requests/{own}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200

    refused = world.submit("worker", action="deploy", target="payments", parent_request_id=own)

    assert refused.status_code == 409, refused.text
    assert refused.json()["current_status"] == "completed"


def test_an_absurd_max_ttl_is_a_422_not_a_500(world: World) -> None:
    root, _ = world.active("orchestrator")
    answer = delegation_to_worker(world, root, max_ttl="99999999999d")
    assert answer.status_code == 422, answer.text
    assert "max_ttl" in answer.json()["detail"]


def test_a_cascade_deadlocking_with_the_expiry_sweep_loses_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a revoke locks the parent then its children; the sweep locks by id (a child
    first when its id sorts lower). PostgreSQL aborts one of them; the loser is a lost race
    (retried by the sweep), not a crash of the whole batch (review finding)."""
    if world.engine.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: no deadlock to break")
    import threading
    import time

    from core.storage import delegations_repo

    root, kids = "", []
    for _ in range(20):  # until a child's id sorts before its parent's
        root, _claimed = world.active("orchestrator")
        assert delegation_to_worker(world, root).status_code == 201
        kids = []
        for i in range(6):
            answer = world.submit(
                "worker", action="deploy.web", target=f"payments/web{i}", parent_request_id=root
            )
            assert answer.status_code == 201, answer.text
            kids.append(answer.json()["id"])
            world.claim("worker", kids[-1])
        if min(kids) < root:
            break
    assert min(kids) < root
    service = world.engine.service
    revoking, go = threading.Event(), threading.Event()
    revoker: dict[str, int] = {}
    real = delegations_repo.live_children

    def held(session: Any, ids: Any) -> Any:
        if threading.get_ident() == revoker.get("id"):
            revoking.set()
            go.wait(10)
        return real(session, ids)

    monkeypatch.setattr(delegations_repo, "live_children", held)
    errors: list[str] = []

    def revoke() -> None:
        revoker["id"] = threading.get_ident()
        try:
            service.revoke(root, by="admin@example.com", reason="incident", now=world.clock.now)
        except Exception as exc:
            errors.append(f"revoke: {exc!r}")

    def sweep() -> None:
        try:
            service.expire_due(now=world.clock.now + timedelta(hours=2))
        except Exception as exc:
            errors.append(f"sweep: {exc!r}")

    first = threading.Thread(target=revoke)
    first.start()
    assert revoking.wait(10)
    second = threading.Thread(target=sweep)
    second.start()
    time.sleep(1.0)  # the sweep holds the lower-id child and waits for the parent
    go.set()
    first.join(30)
    second.join(30)
    assert not [e for e in errors if "sweep" in e], errors
    assert {service.get(k).status.value for k in kids} <= {"revoked", "expired"}


def test_the_python_client_delegates_and_the_child_works_under_it(world: World) -> None:
    from stepup_client import StepupClient

    root, _ = world.active("orchestrator")
    with StepupClient(world.url, world.keys["orchestrator"], retries=0) as orchestrator:
        delegation = orchestrator.delegate(
            root, "worker", actions=["deploy.*"], targets=["payments/*"], max_ttl="5m"
        )
    assert delegation.id.startswith("dlg_") and delegation.parent_request_id == root
    assert (delegation.agent, delegation.depth, delegation.max_ttl_seconds) == ("worker", 1, 300)
    with StepupClient(world.url, world.keys["worker"], retries=0, dpop=False) as worker:
        child = worker.submit(
            "deploy.web",
            "write",
            "payments/web",
            "production",
            "roll out web",
            parent_request_id=root,
        )
        credential = worker.claim(child.id)
    assert claims_of(credential.token)["act"] == {"sub": "worker"}


def test_the_card_of_a_delegated_child_posted_to_slack_shows_its_chain_in_order(
    db: Database, tmp_path: Path
) -> None:
    """Three levels over the real API with Slack on (the emulator): the helper's child under
    the worker's request needs people (the secrets rule), and the card Slack receives names
    the chain from the root down: orchestrator → worker → helper, each with its request."""
    with slack_live(db, tmp_path, POLICY) as live:
        now = datetime.now(UTC)
        keys = {
            name: live.engine.registry.add(name, OWNER, by="test", now=now)
            for name in ("orchestrator", "worker", "helper")
        }
        world = World(live.url, live.engine, Clock(now), keys)
        root, _ = world.active("orchestrator")
        middle = second_level(world, root)
        child = pending_leaf(world, middle)

        card = live.card(child)

    sections = [
        b["text"]["text"]
        for b in card.latest.blocks
        if b["type"] == "section" and "text" in b and "Delegated by" in b["text"]["text"]
    ]
    assert sections == [
        f"*Delegated by* `orchestrator` (`{root}`) → `worker` (`{middle}`) → `helper` (`{child}`)"
    ]
