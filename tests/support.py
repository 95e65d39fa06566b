"""Helpers shared by the tests: a test policy, the engine wired on a real database, the one
intent builder (as a core ``Intent`` or as an HTTP body) and one bounded wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


def intent_fields(
    *,
    action: str = "k8s.rollout_restart",
    action_class: ActionClass | str = ActionClass.DESTRUCTIVE,
    target: str = "payments-api",
    environment: str = "production",
    **extra: object,
) -> dict[str, object]:
    """The test intent's fields (agent aside): a production restart of payments-api, which
    TEST_POLICY sends to sre-leads for two approvals. Override any field by keyword."""
    fields: dict[str, object] = {
        "action": action,
        "action_class": ActionClass(action_class),
        "target": target,
        "environment": environment,
        "justification": "deploy fix for INC-42",
        "parameters": {"replicas": 3},
    }
    fields.update(extra)
    return fields


def intent(agent: AgentIdentity | str = "deploy-bot", **fields: Any) -> Intent:
    """The test intent as core takes it; ``fields`` as for ``intent_fields``."""
    agent_id = agent.id if isinstance(agent, AgentIdentity) else agent
    return Intent(agent=agent_id, **intent_fields(**fields))  # type: ignore[arg-type]


def submit_body(**fields: Any) -> dict[str, Any]:
    """The same intent as the JSON body of ``POST /v1/requests``."""
    body: dict[str, Any] = intent_fields(**fields)
    body["action_class"] = ActionClass(body["action_class"]).value
    return body


T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    ignoring: tuple[type[Exception], ...] = (),
    message: str = "condition not met",
) -> T:
    """Call ``probe`` until ``until(value)`` is true (by default: the value itself), and
    return that value. Bounded: after ``timeout`` s, fail naming the last value seen.

    Exceptions of the ``ignoring`` types count as "not yet" (a server still starting);
    any other exception ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = probe()
        except ignoring as exc:
            last = exc
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout} s; last seen: {last!r}")
        time.sleep(interval)
