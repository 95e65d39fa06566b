"""Delegation and the cascade on the in-memory store (fixed times, no database)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.audit.events import AuditKind
from core.errors import Conflict, IllegalTransition, NotFound, ValidationFailed
from core.model import AgentIdentity, SessionOutcome, Status
from tests.support import OWNER, intent
from tests.unit.usecases.conftest import T0, World, build_world

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre: { slack_users: [U0ALICE] }
channels:
  approvals: C0APPROVALS
rules:
  - name: asks
    match: { target: "payments/*/secrets" }
    decision: approve
    approvers: sre
    channel: approvals
  - name: deploys
    match: { action: ["deploy", "deploy.*"] }
    decision: allow
    max_ttl: 10m
    delegable: true
"""
ROOT = AgentIdentity("orchestrator", OWNER)
WORKER = AgentIdentity("worker", OWNER)


@pytest.fixture
def world(tmp_path: Path) -> World:
    built = build_world(tmp_path, POLICY)
    built.store.state.agents["k-root"] = ROOT
    built.store.state.agents["k-worker"] = WORKER
    return built


def active_root(world: World) -> str:
    svc = world.service
    snap, _ = svc.submit(ROOT, intent(ROOT, action="deploy", target="payments"), now=T0)
    svc.claim(snap.id, ROOT, now=T0)
    return snap.id


def delegate(world: World, parent: str, **overrides: object) -> str:
    fields: dict[str, object] = {
        "child": "worker",
        "actions": ["deploy.*"],
        "targets": ["payments/*"],
        "max_ttl": timedelta(minutes=5),
    } | overrides
    return world.service.delegating.delegate(parent, ROOT, now=T0, **fields).id  # type: ignore[arg-type]


def child(world: World, parent: str, **fields: object) -> str:
    body = {"action": "deploy.web", "target": "payments/web", "parent_request_id": parent}
    snap, _ = world.service.submit(WORKER, intent(WORKER, **(body | fields)), now=T0)
    return snap.id


def test_a_delegation_is_recorded_and_audited_under_its_parent(world: World) -> None:
    root = active_root(world)
    dlg = delegate(world, root)
    (entry,) = [e for e in world.store.state.audit if e.kind is AuditKind.DELEGATION_CREATED]
    assert (entry.request_id, entry.actor, entry.data["delegation_id"]) == (root, ROOT.id, dlg)
    assert world.service.get(child(world, root)).delegation_id == dlg


def test_refusals(world: World) -> None:
    root = active_root(world)
    with pytest.raises(ValidationFailed, match=r"^targets:"):
        delegate(world, root, targets=["*"])
    with pytest.raises(ValidationFailed, match=r"^agent:"):
        delegate(world, root, child="ghost")
    with pytest.raises(NotFound):
        world.service.delegating.delegate(
            root,
            WORKER,
            child="orchestrator",
            actions=["deploy"],
            targets=["payments"],
            max_ttl=timedelta(minutes=1),
            now=T0,
        )
    delegate(world, root)
    with pytest.raises(ValidationFailed, match=r"^action:"):
        child(world, root, action="db.drop")
    with pytest.raises(ValidationFailed, match=r"^target:"):
        child(world, root, target="orders")
    world.service.complete(
        root,
        ROOT,
        SessionOutcome.SUCCEEDED,
        detail="",
        now=T0,
    )
    with pytest.raises(IllegalTransition):
        child(world, root)
    with pytest.raises(IllegalTransition):
        delegate(world, root)


def test_ending_a_request_ends_every_live_descendant_once(world: World) -> None:
    root = active_root(world)
    delegate(world, root)
    claimed = child(world, root)
    world.service.claim(claimed, WORKER, now=T0)
    approved = child(world, root, action="deploy.api", target="payments/api")
    pending = child(world, root, target="payments/web/secrets")
    assert world.service.get(pending).status is Status.PENDING
    world.published.clear()
    world.service.revoke(root, by="admin", reason="stop", now=T0 + timedelta(minutes=1))
    statuses = [world.service.get(i).status for i in (root, claimed, approved, pending)]
    assert statuses == [Status.REVOKED, Status.REVOKED, Status.REVOKED, Status.CANCELLED]
    assert sorted(s.id for s in world.published) == sorted((root, claimed, approved, pending))
    reason = f"ancestor request {root} ended (revoked)"
    assert world.audit_kinds(claimed)[-2:] == [
        AuditKind.CREDENTIAL_REVOKED,
        AuditKind.ISSUER_REVOKED,  # the built-in JWT's: settled in the same transaction
    ]
    assert world.audit_kinds(approved)[-1] is AuditKind.REQUEST_REVOKED
    assert world.audit_kinds(pending)[-1] is AuditKind.REQUEST_CANCELLED
    for request_id in (claimed, approved, pending):
        last = [
            e
            for e in world.store.state.audit
            if e.request_id == request_id and e.kind is not AuditKind.ISSUER_REVOKED
        ][-1]
        assert last.data["reason"] == reason


def test_a_delegation_deeper_than_max_depth_is_refused(tmp_path: Path) -> None:
    shallow = build_world(
        tmp_path, POLICY.replace("delegable: true", "delegable: true\n    max_depth: 1")
    )
    shallow.store.state.agents["k-root"] = ROOT
    shallow.store.state.agents["k-worker"] = WORKER
    shallow.store.state.agents["k-helper"] = AgentIdentity("helper", OWNER)
    root = active_root(shallow)
    delegate(shallow, root)
    mid = child(shallow, root)
    shallow.service.claim(mid, WORKER, now=T0)
    with pytest.raises(Conflict, match="max_depth"):
        shallow.service.delegating.delegate(
            mid,
            WORKER,
            child="helper",
            actions=["deploy.web"],
            targets=["payments/web"],
            max_ttl=timedelta(minutes=1),
            now=T0,
        )
