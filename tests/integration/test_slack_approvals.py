"""Approvals in Slack, end to end: signed requests to /slack/events, the emulator over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.slack.cards import (
    APPROVE,
    CONFIRM_BLOCK,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    DENY,
    DENY_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    REVOKE,
)
from bot.slack.handlers import no_request
from bot.slack_emulator.signed_client import SignedSlackClient
from core.model import Status
from core.storage.database import Database
from core.storage.tables import AuditRow, VoteRow
from tests.integration.slack_env import SPONSOR, SlackLive, slack_live


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[SlackLive]:
    with slack_live(db, tmp_path) as env:
        yield env


def votes(live: SlackLive) -> int:
    with live.engine.db.read() as session:
        return int(session.execute(select(func.count()).select_from(VoteRow)).scalar_one())


def audit_count(live: SlackLive, kind: str) -> int:
    with live.engine.db.read() as session:
        return int(
            session.execute(
                select(func.count()).select_from(AuditRow).where(AuditRow.kind == kind)
            ).scalar_one()
        )


def test_quorum_two_updates_the_card_after_each_click(live: SlackLive) -> None:
    req = live.submit(on_behalf_of=SPONSOR)
    card = live.card(req.id)
    first = json.dumps(card.latest.blocks)
    for expected in (
        "payments-api",
        "k8s.rollout_restart",
        "production",
        "deploy-bot",
        "olga@example.com",
        SPONSOR,
        "prod-destructive",
        "high",
        "INC-42",
        '\\"replicas\\": 3',
        "0 of 2",
        APPROVE,
        DENY,
    ):
        assert expected in first, expected
    # The rule asks for DMs too: every approver with a Slack id got a copy of the card.
    live.eventually(
        lambda: any(req.id in json.dumps(m.latest.blocks) for m in live.slack.dms("U0ALICE"))
    )

    assert live.sim.click(APPROVE, req.id, "U0ALICE", message=card).status_code == 200
    live.eventually(lambda: "1 of 2" in live.latest_blocks(card))
    assert live.engine.service.get(req.id).status is Status.PENDING
    live.eventually(lambda: any("approved (1 of 2)" in t for t in live.thread_texts(card)))

    assert live.sim.click(APPROVE, req.id, "U0BOB", message=card).status_code == 200
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    live.eventually(lambda: APPROVE not in live.latest_blocks(card))
    blocks = live.latest_blocks(card)
    assert (
        "2 of 2" in blocks
        and "Approved" in blocks
        and "Alice Archer" in blocks
        and "Bob Baker" in blocks
    )
    live.eventually(lambda: any(t.startswith("Approved by") for t in live.thread_texts(card)))
    # The sponsor was only stated by the agent (it used a static key): no DM of the approval,
    # only of the outcome (docs/identity.md). The thread note above was queued with it.
    assert not any("Approved by" in m.latest.text for m in live.slack.dms("U0SAM"))
    # Every copy of the card (channel and DMs) was updated in place.
    for dm in live.slack.dms("U0ALICE"):
        if req.id in json.dumps(dm.versions[0].blocks):
            live.eventually(
                lambda dm=dm: (
                    APPROVE not in json.dumps(live.slack.message(dm.channel, dm.ts).latest.blocks)
                )
            )
    assert votes(live) == 2 and audit_count(live, "decision.recorded") == 2


@pytest.mark.parametrize(
    ("user", "why"), [("U0EVE", "not an approver"), ("U0SAM", "sponsor"), ("U0OLGA", "own")]
)
def test_ineligible_sponsor_and_owner_are_refused(live: SlackLive, user: str, why: str) -> None:
    req = live.submit(on_behalf_of=SPONSOR)
    card = live.card(req.id)
    assert live.sim.click(APPROVE, req.id, user, message=card).status_code == 200
    live.slack.wait_for("chat.postEphemeral")
    ephemeral = live.slack.ephemerals(user)[-1]
    assert why in ephemeral.text and "Nothing was recorded" in ephemeral.text
    assert votes(live) == 0
    assert live.engine.service.get(req.id).status is Status.PENDING
    assert audit_count(live, "click.refused") == 1


def test_deny_opens_a_modal_that_requires_a_reason(live: SlackLive) -> None:
    req = live.submit(on_behalf_of=SPONSOR)
    card = live.card(req.id)
    live.sim.click(DENY, req.id, "U0ALICE", message=card)
    live.slack.wait_for("views.open")
    modal = live.slack.views_opened()[-1].payload
    assert modal["callback_id"] == DENY_MODAL
    meta = modal["private_metadata"]
    empty = live.sim.submit_view(
        DENY_MODAL, {REASON_BLOCK: {REASON_INPUT: " "}}, "U0ALICE", private_metadata=meta
    )
    assert empty.json()["response_action"] == "errors" and REASON_BLOCK in empty.json()["errors"]
    assert live.engine.service.get(req.id).status is Status.PENDING
    done = live.sim.submit_view(
        DENY_MODAL,
        {REASON_BLOCK: {REASON_INPUT: "change freeze until Monday"}},
        "U0ALICE",
        private_metadata=meta,
    )
    assert done.status_code == 200 and not done.content.strip(b"{} ")
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.DENIED)
    assert live.engine.service.get(req.id).status_reason == "change freeze until Monday"
    live.eventually(
        lambda: (
            "change freeze until Monday" in live.latest_blocks(card)
            and APPROVE not in live.latest_blocks(card)
        )
    )
    live.eventually(lambda: any("Denied" in m.latest.text for m in live.slack.dms("U0SAM")))


def test_typed_confirmation_wrong_then_right(live: SlackLive) -> None:
    req = live.submit(action_class="write", target="orders-db")
    card = live.card(req.id)
    live.sim.click(APPROVE, req.id, "U0DAVE", message=card)  # eligible through the user group
    live.slack.wait_for("views.open")
    modal = live.slack.views_opened()[-1].payload
    assert modal["callback_id"] == CONFIRM_MODAL and "orders-db" in json.dumps(modal)
    wrong = live.sim.submit_view(
        CONFIRM_MODAL,
        {CONFIRM_BLOCK: {CONFIRM_INPUT: "orders_db"}},
        "U0DAVE",
        private_metadata=modal["private_metadata"],
    )
    assert "orders-db" in wrong.json()["errors"][CONFIRM_BLOCK]
    assert votes(live) == 0
    right = live.sim.submit_view(
        CONFIRM_MODAL,
        {CONFIRM_BLOCK: {CONFIRM_INPUT: "orders-db"}},
        "U0DAVE",
        private_metadata=modal["private_metadata"],
    )
    assert right.status_code == 200
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)


def test_click_after_expiry_says_so_and_refreshes_the_card(live: SlackLive) -> None:
    req = live.submit(when=datetime.now(UTC) - timedelta(hours=1))  # its 30 min window is over
    card = live.card(req.id)
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.slack.wait_for("chat.postEphemeral")
    assert "expired" in live.slack.ephemerals("U0ALICE")[-1].text
    live.eventually(
        lambda: "Expired" in live.latest_blocks(card) and APPROVE not in live.latest_blocks(card)
    )
    assert live.engine.service.get(req.id).status is Status.EXPIRED and votes(live) == 0


def test_click_on_a_decided_card_names_who_decided(live: SlackLive) -> None:
    req = live.submit(environment="staging", action_class="write")
    card = live.card(req.id)
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    live.sim.click(APPROVE, req.id, "U0BOB", message=card)
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and c.params.get("user") == "U0BOB"
    )
    assert "Already approved by Alice Archer" in live.slack.ephemerals("U0BOB")[-1].text


def test_forged_and_stale_signatures_are_refused(live: SlackLive) -> None:
    req = live.submit()
    card = live.card(req.id)
    forger = SignedSlackClient(live.sim.events_url, "not-the-secret")
    assert forger.click(APPROVE, req.id, "U0ALICE", message=card).status_code == 401
    stale = int(time.time()) - 6 * 60
    assert (
        live.sim.click(APPROVE, req.id, "U0ALICE", message=card, timestamp=stale).status_code == 401
    )
    unsigned = live.sim.post(b"payload=%7B%7D", "application/x-www-form-urlencoded", signed=False)
    assert unsigned.status_code == 401
    forger.close()
    # A genuine click sent after them, whose answer (a refusal: Eve is no approver) shows the
    # clicks before it have been handled; only then can "nothing happened" be checked.
    assert live.sim.click(APPROVE, req.id, "U0EVE", message=card).status_code == 200
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and c.params.get("user") == "U0EVE"
    )
    assert votes(live) == 0
    assert [e.user for e in live.slack.ephemerals()] == ["U0EVE"]


def test_twenty_concurrent_clicks_and_retries_count_once(live: SlackLive) -> None:
    req = live.submit(environment="staging", action_class="write")
    card = live.card(req.id)

    def click(i: int) -> int:
        retry = i % 4 if i % 4 else None  # some arrive as Slack retries
        return live.sim.click(APPROVE, req.id, "U0ALICE", message=card, retry_num=retry).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(click, range(20)))
    assert codes == [200] * 20
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    # Every click but the one that counted is answered with an ephemeral (already recorded,
    # or already approved): once all 19 are in, every click has been handled.
    alice_told = live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and c.params.get("user") == "U0ALICE",
        timeout=10,
        count=19,
    )
    assert len(alice_told) == 19
    assert votes(live) == 1
    assert (
        audit_count(live, "decision.recorded") == 1 and audit_count(live, "request.approved") == 1
    )


def test_revoke_button_on_an_active_card(live: SlackLive) -> None:
    req = live.submit(environment="staging", action_class="write")
    card = live.card(req.id)
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    _, issued = live.engine.service.claim(req.id, live.agent, now=datetime.now(UTC))
    live.eventually(
        lambda: REVOKE in live.latest_blocks(card) and "active until" in live.latest_blocks(card)
    )
    live.sim.click(REVOKE, req.id, "U0EVE", message=card)  # not an approver: refused
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and c.params.get("user") == "U0EVE"
    )
    assert live.engine.service.get(req.id).status is Status.ACTIVE
    live.sim.click(REVOKE, req.id, "U0BOB", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.REVOKED)
    assert live.engine.service.introspect(issued.token, now=datetime.now(UTC)) == {"active": False}
    live.eventually(
        lambda: "Revoked" in live.latest_blocks(card) and REVOKE not in live.latest_blocks(card)
    )


def test_slash_command_and_app_home(live: SlackLive) -> None:
    req = live.submit()
    live.card(req.id)
    assert live.sim.slash("/stepup", "help", "U0ALICE").status_code == 200
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and "pending" in str(c.params.get("text"))
    )
    live.sim.slash("/stepup", "pending", "U0ALICE")
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and req.id in str(c.params.get("text"))
    )
    live.sim.slash("/stepup", "pending", "U0EVE")
    live.slack.wait_for(
        lambda c: (
            c.method == "chat.postEphemeral" and "Nothing is waiting" in str(c.params.get("text"))
        )
    )
    live.sim.slash("/stepup", f"status {req.id}", "U0BOB")
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and "*pending*" in str(c.params.get("text"))
    )

    live.sim.app_home_opened("U0ALICE")
    live.slack.wait_for("views.publish")
    home = live.slack.home("U0ALICE")
    assert home is not None and req.id in json.dumps(home.payload)

    allowed = live.submit(environment="staging", action_class="write")
    live.card(allowed.id)
    live.sim.click(APPROVE, allowed.id, "U0ALICE", message=live.card(allowed.id))
    live.eventually(lambda: live.engine.service.get(allowed.id).status is Status.APPROVED)
    live.engine.service.claim(allowed.id, live.agent, now=datetime.now(UTC))
    live.sim.slash("/stepup", f"revoke {allowed.id}", "U0EVE")
    live.slack.wait_for(
        lambda c: (
            c.method == "chat.postEphemeral"
            and c.params.get("user") == "U0EVE"
            and c.params.get("text") == no_request(allowed.id)
        )
    )
    live.sim.slash("/stepup", f"revoke {allowed.id}", "U0ALICE")
    live.eventually(lambda: live.engine.service.get(allowed.id).status is Status.REVOKED)
