"""Real short TTLs against the running service: expiry, auto-revoke and escalation happen
on time, by themselves, and show on the Slack card."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.slack.cards import APPROVE
from core.model import Status
from core.storage.database import Database
from tests.integration.slack_env import SlackLive, slack_live

SHORT = """\
version: 1
defaults: { approval_timeout: 2s, claim_window: 2s, max_ttl: 2s }
approver_groups:
  sre-leads: { slack_users: [U0ALICE, U0BOB] }
  security-leads: { slack_users: [U0DAVE] }
channels: { approvals: C0APPROVALS }
rules:
  - name: escalating
    match: { environment: production, action_class: privilege_change }
    decision: approve
    approvers: sre-leads
    channel: approvals
    approval_timeout: 8s
    escalate_after: 2s
    escalate_to: security-leads
  - name: prod
    match: { environment: production }
    decision: approve
    approvers: sre-leads
    channel: approvals
"""


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[SlackLive]:
    with slack_live(db, tmp_path, SHORT, scheduler=True) as env:
        yield env


def test_pending_request_expires_on_time_and_the_card_says_so(live: SlackLive) -> None:
    req = live.submit()
    card = live.card(req.id)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.EXPIRED, timeout=10)
    # Timed by the service's own clock (the time it recorded the expiry), not by when this
    # test happened to look: at the 2 s deadline, never before, and not long after.
    expired = live.engine.service.get(req.id)
    assert req.expires_at is not None
    assert (req.expires_at - req.created_at).total_seconds() == 2
    assert 0 <= (expired.updated_at - req.expires_at).total_seconds() < 2.0
    live.eventually(
        lambda: "Expired" in live.latest_blocks(card) and APPROVE not in live.latest_blocks(card)
    )
    live.eventually(lambda: "Expired — no decision" in live.thread_texts(card))


def test_active_credential_is_revoked_at_its_ttl(live: SlackLive) -> None:
    req = live.submit()
    card = live.card(req.id)
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    _, issued = live.engine.service.claim(req.id, live.agent, now=datetime.now(UTC))
    assert live.engine.service.introspect(issued.token, now=datetime.now(UTC))["active"] is True
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.REVOKED, timeout=10)
    # When the service revoked it, by its own clock: at the TTL, not when this test looked.
    revoked = live.engine.service.get(req.id).credential
    assert revoked is not None and revoked.revoked_at is not None
    assert 0 <= (revoked.revoked_at - issued.expires_at).total_seconds() < 2.0
    server = live.engine.registry.add_resource_server(
        "payments-api", by="test", now=datetime.now(UTC)
    )
    answer = httpx.post(
        f"{live.url}/v1/introspect",
        data={"token": issued.token},
        headers={"Authorization": f"Bearer {server}"},
    )
    assert answer.json() == {"active": False}
    live.eventually(lambda: "Revoked" in live.latest_blocks(card))
    live.eventually(lambda: "Credential TTL elapsed — revoked" in live.thread_texts(card))


def test_escalation_on_time(live: SlackLive) -> None:
    req = live.submit(action_class="privilege_change")
    card = live.card(req.id)
    live.eventually(lambda: any("Reminder" in t for t in live.thread_texts(card)), timeout=4)
    live.eventually(
        lambda: any("Escalated to security-leads" in t for t in live.thread_texts(card)), timeout=4
    )
    live.eventually(lambda: any(req.id in str(m.latest.blocks) for m in live.slack.dms("U0DAVE")))
    live.sim.click(APPROVE, req.id, "U0DAVE", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
