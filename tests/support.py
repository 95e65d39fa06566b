"""Helpers shared by the tests: a test policy, the engine wired on a real database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.agents import AgentRegistry
from core.credentials import JwtIssuer
from core.keys import KeyRing
from core.model import ActionClass, Intent
from core.policy import PolicyHolder
from core.service import Stepup
from core.storage.agents_repo import AgentIdentity
from core.storage.database import Database

ISSUER = "https://stepup.test"

TEST_POLICY = """\
version: 1
defaults:
  approval_timeout: 30m
  claim_window: 5m
  max_ttl: 15m
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB, U0CAROL]
    emails: [dave@example.com]
  solo:
    slack_users: [U0ALICE]
channels:
  approvals: C0APPROVALS
rules:
  - name: never-drop-prod-db
    match: { action: "db.drop_database", environment: production }
    decision: deny
    reason: Dropping a production database is never automated
  - name: prod-destructive
    match: { environment: production, action_class: [destructive, privilege_change] }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 2
    channel: approvals
    max_ttl: 10m
  - name: prod-write-stepup
    match: { environment: production, action_class: write }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
    step_up: true
  - name: staging-writes
    match: { environment: staging, action_class: write }
    decision: approve
    approvers: solo
    quorum: 1
    channel: approvals
  - name: reads
    match: { action_class: read }
    decision: allow
    tier: low
    max_ttl: 5m
"""

OWNER = "olga@example.com"
SPONSOR = "sam@example.com"


@dataclass
class Engine:
    service: Stepup
    registry: AgentRegistry
    keyring: KeyRing
    db: Database
    policy_path: Path


def build_engine(db: Database, tmp_path: Path, policy: str = TEST_POLICY) -> Engine:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy)
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    service = Stepup(
        db,
        PolicyHolder.from_file(policy_path),
        keyring,
        JwtIssuer(keyring, issuer_url=ISSUER),
        issuer_url=ISSUER,
    )
    return Engine(service, AgentRegistry(service), keyring, db, policy_path)


def intent(
    agent: AgentIdentity | str = "deploy-bot",
    *,
    action: str = "k8s.rollout_restart",
    action_class: ActionClass = ActionClass.DESTRUCTIVE,
    target: str = "payments-api",
    environment: str = "production",
    **extra: object,
) -> Intent:
    agent_id = agent.id if isinstance(agent, AgentIdentity) else agent
    fields: dict[str, object] = {
        "justification": "deploy fix for INC-42",
        "parameters": {"replicas": 3},
    }
    fields.update(extra)
    return Intent(
        agent=agent_id,
        action=action,
        action_class=action_class,
        target=target,
        environment=environment,
        **fields,
    )  # type: ignore[arg-type]
