"""A card goes to several places, and one that fails keeps it from none of the others; what
Slack refuses is posted in a minimal form that can still be acted on (Show all included).

Every test runs stepup with Slack against the emulator over real HTTP; refusals are ordered up
from its fault API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.slack.cards import APPROVE, BREAK_GLASS_ACK, DENY, REVOKE, SHOW_ALL
from bot.slack_emulator.entities import Call, Message
from core.snapshots import RequestSnapshot
from core.storage.database import Database
from core.storage.tables import OutboxRow
from tests.integration.slack_env import SlackLive, slack_live

SECURITY = "C0SECURITY"
APPROVERS = ("U0ALICE", "U0BOB", "U0CAROL")

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB, U0CAROL]
channels:
  approvals: C0APPROVALS
rules:
  - name: break-glass
    match: { action_class: secret_read }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
    break_glass: true
  - name: dev-dms-only
    match: { environment: dev }
    decision: approve
    approvers: sre-leads
    quorum: 1
    notify: [dm]
  - name: prod-channel-and-dms
    match: { environment: production }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
    notify: [channel, dm]
  - name: staging
    match: { environment: staging }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
"""


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[SlackLive]:
    with slack_live(db, tmp_path, POLICY) as env:
        env.engine.service.security_channel = SECURITY
        yield env


def entry(live: SlackLive, request_id: str, kind: str) -> OutboxRow:
    return live.outbox_entry(request_id, kind)


def report(live: SlackLive, request_id: str) -> Message:
    """The notice in the security channel naming ``request_id``, once posted."""
    [call] = live.slack.wait_for(
        lambda c: (
            c.method == "chat.postMessage"
            and c.ok
            and c.params.get("channel") == SECURITY
            and "Slack delivery failed" in str(c.params.get("text"))
            and request_id in json.dumps(c.params)
        ),
        10.0,
    )
    return live.slack.message(SECURITY, str(call.response["ts"]))


def cards_in_dm(live: SlackLive, user: str, request_id: str) -> list[Message]:
    return [m for m in live.slack.dms(user) if request_id in json.dumps(m.latest.blocks)]


def card_posts(live: SlackLive, request_id: str) -> list[Call]:
    """Successful posts of the request's card (not its thread), oldest first."""
    return [
        c
        for c in live.slack.calls("chat.postMessage")
        if c.ok and not c.params.get("thread_ts") and request_id in json.dumps(c.params)
    ]


def buttons(message: Message) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["value"])
        for b in message.latest.blocks or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]


# -- 1. one approver's DM or one copy failing ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("conversations.open", "user_disabled"),
        ("conversations.open", "user_not_found"),
        ("chat.postMessage", "cannot_dm_bot"),
    ],
)
def test_one_approver_refused_for_good_the_others_still_get_the_card(
    live: SlackLive, method: str, error: str
) -> None:
    live.slack.fail(method, times=1, error=error, status=200)  # the first approver's DM
    req = live.submit(environment="dev")  # a DM-only rule: Slack has no other card
    notice = report(live, req.id)
    assert cards_in_dm(live, "U0ALICE", req.id) == []
    for approver in ("U0BOB", "U0CAROL"):
        [dm] = cards_in_dm(live, approver, req.id)
        assert APPROVE in json.dumps(dm.latest.blocks)
    dead = entry(live, req.id, "card.post")
    assert (dead.status, dead.attempts) == ("dead", 1)
    assert dead.last_error == f"Slack said {error} for the DM to U0ALICE"
    assert "U0ALICE" in json.dumps(notice.latest.blocks) and error in notice.latest.text
    # The request can be decided in Slack from a card that got through.
    [dm] = cards_in_dm(live, "U0BOB", req.id)
    assert live.sim.click(APPROVE, req.id, "U0BOB", message=dm).status_code == 200
    live.eventually(lambda: live.engine.service.get(req.id).status.value == "approved")


def test_a_transient_failure_for_one_approver_retries_only_that_one(live: SlackLive) -> None:
    live.slack.fail("conversations.open", times=1, error="internal_error", status=200)
    req = live.submit(environment="dev")
    live.eventually(lambda: entry(live, req.id, "card.post").status == "sent")
    assert entry(live, req.id, "card.post").attempts == 2
    for approver in APPROVERS:
        assert len(cards_in_dm(live, approver, req.id)) == 1  # none twice
    # Bob and Carol were not held back by Alice's failure: their cards went out first.
    dms = {live.slack.dms(u)[0].channel: u for u in APPROVERS}
    assert [dms[c.params["channel"]] for c in card_posts(live, req.id)] == [
        "U0BOB",
        "U0CAROL",
        "U0ALICE",
    ]
    assert live.slack.messages(SECURITY) == []


def card_copies(live: SlackLive, req: RequestSnapshot) -> list[Message]:
    """The channel's card and each approver's DM copy, once all are posted."""
    live.eventually(lambda: entry(live, req.id, "card.post").status == "sent")
    return [live.card(req.id)] + [cards_in_dm(live, u, req.id)[0] for u in APPROVERS]


@pytest.mark.parametrize("error", ["message_not_found", "channel_not_found", "is_archived"])
def test_one_copy_that_cannot_be_updated_leaves_no_other_copy_stale(
    live: SlackLive, error: str
) -> None:
    req = live.submit()  # production: the channel and every approver's DM
    copies = card_copies(live, req)
    live.slack.fail("chat.update", times=1, error=error, status=200)  # the channel's copy
    live.engine.service.cancel(req.id, live.agent, now=req.created_at)
    notice = report(live, req.id)
    for copy in copies[1:]:
        live.eventually(lambda copy=copy: APPROVE not in live.latest_blocks(copy))
    assert APPROVE in live.latest_blocks(copies[0])  # the one Slack refused
    dead = entry(live, req.id, "card.refresh")
    assert (dead.status, dead.attempts) == ("dead", 1)
    assert dead.last_error == f"Slack said {error} for the copy in C0APPROVALS"
    assert "C0APPROVALS" in json.dumps(notice.latest.blocks)
    assert len(live.slack.calls("chat.update")) == 4  # each copy once, none retried


def test_a_transient_failure_of_one_copy_retries_only_that_copy(live: SlackLive) -> None:
    req = live.submit()
    copies = card_copies(live, req)
    live.slack.fail("chat.update", times=1, error="internal_error", status=200)
    live.engine.service.cancel(req.id, live.agent, now=req.created_at)
    live.eventually(lambda: entry(live, req.id, "card.refresh").status == "sent")
    assert entry(live, req.id, "card.refresh").attempts == 2
    for copy in copies:
        assert APPROVE not in live.latest_blocks(copy)
    updated = [c.params["channel"] for c in live.slack.calls("chat.update") if c.ok]
    assert updated == [c.channel for c in copies[1:]] + [copies[0].channel]
    assert live.slack.messages(SECURITY) == []


# -- 2. the minimal card's Show all ----------------------------------------------------------


def test_the_minimal_card_offers_show_all_and_it_opens_the_whole_request(
    live: SlackLive,
) -> None:
    live.slack.fail("chat.postMessage", times=1, error="invalid_blocks", status=200)
    req = live.submit(
        environment="staging", justification="rotate the key after INC-77", parameters={"n": 5}
    )
    card = live.card(req.id)
    words = json.dumps(card.latest.blocks)
    assert "Slack refused the full card" in words
    assert "Press Show all and read the whole request before you decide" in words
    assert "rotate the key" not in words  # the minimal card leaves the justification out
    assert buttons(card) == [(APPROVE, req.id), (DENY, req.id), (SHOW_ALL, req.id)]

    opened = len(live.slack.calls("views.open"))
    assert live.sim.click(SHOW_ALL, req.id, "U0ALICE", message=card).status_code == 200
    [call] = live.slack.wait_for("views.open", count=opened + 1)[opened:]
    assert call.ok, call.response
    view = json.dumps(live.slack.views_opened()[-1].payload)
    assert "rotate the key after INC-77" in view and req.id in view


# -- 3. the minimal break-glass alert --------------------------------------------------------


def test_a_refused_break_glass_alert_is_posted_minimal_and_can_be_acknowledged(
    live: SlackLive,
) -> None:
    live.slack.fail("chat.postMessage", times=1, error="invalid_blocks", status=200)
    req = live.submit(
        action="vault.read", action_class="secret_read", target="db-<!channel>", break_glass=True
    )
    assert req.status.value == "approved"
    [refused, posted] = live.slack.wait_for(
        lambda c: (
            c.method == "chat.postMessage"
            and c.params.get("channel") == SECURITY
            and "Break-glass" in str(c.params.get("text"))
        ),
        10.0,
        count=2,
    )
    assert refused.response["error"] == "invalid_blocks" and posted.ok
    alert = live.slack.message(SECURITY, str(posted.response["ts"]))
    words = json.dumps(alert.latest.blocks)
    assert (
        "Break-glass used" in words and req.id in words and "Slack refused the full alert" in words
    )
    assert "<!channel>" not in words and "&lt;!channel&gt;" in words
    assert buttons(alert) == [(BREAK_GLASS_ACK, req.id), (REVOKE, req.id), (SHOW_ALL, req.id)]
    live.eventually(lambda: entry(live, req.id, "alert.break_glass").status == "dead")
    dead = entry(live, req.id, "alert.break_glass")
    assert dead.last_error == "Slack said invalid_blocks (a minimal alert was posted instead)"
    report(live, req.id)

    assert live.sim.click(BREAK_GLASS_ACK, req.id, "U0ALICE", message=alert).status_code == 200
    live.eventually(
        lambda: live.engine.service.get(req.id).break_glass_reviewed_by == "alice@example.com"
    )
    opened = len(live.slack.calls("views.open"))
    assert live.sim.click(SHOW_ALL, req.id, "U0BOB", message=alert).status_code == 200
    [call] = live.slack.wait_for("views.open", count=opened + 1)[opened:]
    assert call.ok, call.response
