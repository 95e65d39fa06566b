"""What Slack refuses is not retried, is reported, and never holds a request's messages for ever.

Every test runs stepup with Slack against the emulator over real HTTP; a refusal is either the
emulator's own answer (a channel that does not exist) or one ordered up from its fault API.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bot.slack.cards import APPROVE, DENY, SHOW_ALL
from bot.slack_emulator.entities import Call, Message
from core.model import Status
from core.snapshots import RequestSnapshot
from core.storage.database import Database
from core.storage.tables import OutboxRow
from tests.integration.slack_env import SlackLive, slack_live

SECURITY = "C0SECURITY"
GONE = "C0GONE"  # a channel the workspace does not have: Slack answers channel_not_found

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB]
channels:
  approvals: C0APPROVALS
  gone: C0GONE
rules:
  - name: dev-to-a-missing-channel-and-dms
    match: { environment: dev }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: gone
    notify: [channel, dm]
  - name: prod-to-a-missing-channel
    match: { environment: production }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: gone
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


def staging(live: SlackLive, on_behalf_of: str | None = None) -> RequestSnapshot:
    """A request under the staging rule: its card goes to the approvals channel."""
    return live.submit(environment="staging", action_class="write", on_behalf_of=on_behalf_of)


def entry(live: SlackLive, request_id: str, kind: str) -> OutboxRow:
    return live.outbox_entry(request_id, kind)


def posts_to(live: SlackLive, channel: str, request_id: str) -> list[Call]:
    return [
        c
        for c in live.slack.calls("chat.postMessage")
        if c.params.get("channel") == channel and request_id in json.dumps(c.params)
    ]


def report(live: SlackLive, request_id: str, timeout: float = 5.0) -> tuple[Call, Message]:
    """The notice in the security channel naming ``request_id``, once posted."""
    [call] = live.slack.wait_for(
        lambda c: (
            c.method == "chat.postMessage"
            and c.ok
            and c.params.get("channel") == SECURITY
            and request_id in json.dumps(c.params)
        ),
        timeout,
    )
    return call, live.slack.message(SECURITY, str(call.response["ts"]))


def dead_letter_gauge(live: SlackLive) -> float:
    answer = httpx.get(f"{live.url}/metrics", timeout=10)
    assert answer.status_code == 200
    return next(
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "stepup_slack_dead_letters"
    )


def requests_show(request_id: str, database_url: str, tmp_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        STEPUP_DATABASE_URL=database_url,
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
        STEPUP_POLICY_FILE=str(tmp_path / "policy.yaml"),
    )
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "stepup"), "requests", "show", request_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown_json: dict[str, Any] = json.loads(shown.stdout)
    return shown_json


def test_channel_not_found_is_dead_reported_within_seconds_and_never_retried(
    live: SlackLive, database_url: str, tmp_path: Path
) -> None:
    assert dead_letter_gauge(live) == 0
    req = live.submit()  # production: the rule's channel does not exist
    call, notice = report(live, req.id)
    [refused] = posts_to(live, GONE, req.id)
    assert refused.response["error"] == "channel_not_found"
    assert call.at - refused.at < 5.0
    words = notice.latest.text + json.dumps(notice.latest.blocks)
    assert "channel_not_found" in words and "the approval card" in words

    card = entry(live, req.id, "card.post")
    assert (card.status, card.attempts) == ("dead", 1)
    assert card.last_error == "Slack said channel_not_found for the channel C0GONE"
    # No further attempt, even well past the old backoff (1 s here): a later delivery that
    # itself takes two seconds (a 429 with Retry-After: 2) goes out first.
    live.slack.rate_limit("chat.postMessage", times=1, retry_after=2)
    later = staging(live)
    live.card(later.id)
    assert len(posts_to(live, GONE, req.id)) == 1
    assert entry(live, req.id, "card.post").attempts == 1

    assert dead_letter_gauge(live) == 1
    [shown] = [
        d
        for d in requests_show(req.id, database_url, tmp_path)["slack_deliveries"]
        if d["kind"] == "card.post"
    ]
    assert shown["status"] == "dead"
    assert shown["last_error"] == "Slack said channel_not_found for the channel C0GONE"


def test_approvers_dms_get_the_card_when_the_channel_refuses_it(live: SlackLive) -> None:
    req = live.submit(environment="dev")
    report(live, req.id)
    assert (
        entry(live, req.id, "card.post").last_error
        == "Slack said channel_not_found for the channel C0GONE"
    )
    for approver in ("U0ALICE", "U0BOB"):
        [dm] = [m for m in live.slack.dms(approver) if req.id in json.dumps(m.latest.blocks)]
        assert APPROVE in json.dumps(dm.latest.blocks)


def test_a_refused_card_is_posted_minimal_and_can_still_be_decided(live: SlackLive) -> None:
    live.slack.fail("chat.postMessage", times=1, error="invalid_blocks", status=200)
    req = staging(live)
    card = live.card(req.id)
    attempts = posts_to(live, "C0APPROVALS", req.id)
    assert [c.response.get("error") for c in attempts] == ["invalid_blocks", None]
    minimal = json.dumps(card.latest.blocks)
    assert "Slack refused the full card" in minimal and req.id in minimal
    buttons = [
        (e["action_id"], e["value"])
        for b in card.latest.blocks or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert buttons == [(APPROVE, req.id), (DENY, req.id), (SHOW_ALL, req.id)]
    live.eventually(lambda: entry(live, req.id, "card.post").status == "dead")
    dead = entry(live, req.id, "card.post")
    assert dead.last_error == "Slack said invalid_blocks (a minimal card was posted instead)"
    _, notice = report(live, req.id)
    assert "invalid_blocks" in json.dumps(notice.latest.blocks)

    assert live.sim.click(APPROVE, req.id, "U0ALICE", message=card).status_code == 200
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    # The minimal card is the card now: refreshed in place (Slack takes the full card again)
    # and carrying the request's thread.
    live.eventually(lambda: APPROVE not in live.latest_blocks(card))
    assert "Slack refused the full card" not in live.latest_blocks(card)
    live.eventually(lambda: len(live.thread_texts(card)) == 1)


def test_transient_errors_past_the_cap_die_and_later_messages_still_go_out(
    live: SlackLive,
) -> None:
    live.runtime.worker.max_attempts = 3
    req = staging(live)
    card = live.card(req.id)
    live.slack.fail("chat.update", times=10_000, error="service_unavailable", status=503)
    try:
        live.engine.service.cancel(req.id, live.agent, now=req.created_at)
        # The refresh keeps failing; the note queued after it is delivered all the same.
        live.eventually(lambda: len(live.thread_texts(card)) == 1, timeout=30)
    finally:
        live.slack.reset_faults()
    refresh = entry(live, req.id, "card.refresh")
    assert (refresh.status, refresh.attempts) == ("dead", 3)
    assert refresh.last_error == "Slack said service_unavailable (gave up after 3 attempts)"
    # Slack has the note; the worker marks its entry sent just after Slack answered.
    live.eventually(lambda: entry(live, req.id, "thread.note").status == "sent")
    _, notice = report(live, req.id)
    assert "service_unavailable" in json.dumps(notice.latest.blocks)
    assert len(live.slack.calls("chat.update")) >= 3  # three attempts, each with its own call


def test_rate_limited_then_delivered_exactly_once_and_not_reported(live: SlackLive) -> None:
    """A guard against treating 429 as permanent: three 429s outlast the client's own two
    retries, so the worker's backoff (Retry-After honoured) delivers the card."""
    live.slack.rate_limit("chat.postMessage", times=3, retry_after=1)
    req = staging(live)
    live.card(req.id)
    live.eventually(lambda: entry(live, req.id, "card.post").status == "sent")
    statuses = [c.status for c in posts_to(live, "C0APPROVALS", req.id)]
    assert statuses == [429, 429, 429, 200]
    assert entry(live, req.id, "card.post").attempts == 2
    assert live.slack.messages(SECURITY) == []
    assert dead_letter_gauge(live) == 0


def test_sponsor_dm_goes_only_to_the_exact_active_human_member(
    live: SlackLive, caplog: pytest.LogCaptureFixture
) -> None:
    live.slack.add_user("U0GHOST", "ghost@example.com", deleted=True)
    live.slack.add_user("U0ROBOT", "robot@example.com", is_bot=True)
    caplog.set_level(logging.WARNING, logger="bot.slack.delivery")
    sponsors = {"SAM@Example.com": "U0SAM", "ghost@example.com": None, "robot@example.com": None}
    ids = {}
    for email in sponsors:
        req = staging(live, on_behalf_of=email)
        card = live.card(req.id)
        live.sim.click(APPROVE, req.id, "U0ALICE", message=card)

        def approved(request_id: str = req.id) -> bool:
            return live.engine.service.get(request_id).status.value == "approved"

        live.eventually(approved)
        # A sponsor only the agent named hears of the outcome alone (docs/identity.md).
        live.engine.service.revoke(req.id, by="test", reason="not needed", now=req.created_at)
        ids[email] = req.id
    live.eventually(
        lambda: all(entry(live, rid, "direct").status == "sent" for rid in ids.values()),
        timeout=20,
    )
    assert any(ids["SAM@Example.com"] in m.latest.text for m in live.slack.dms("U0SAM"))
    assert live.slack.dms("U0GHOST") == [] and live.slack.dms("U0ROBOT") == []
    skipped = [r.getMessage() for r in caplog.records if "DM skipped" in r.getMessage()]
    assert sorted(skipped) == sorted(
        f"sponsor of {ids[e]} is no member of the workspace; DM skipped"
        for e in ("ghost@example.com", "robot@example.com")
    )
    assert not any("@example.com" in r.getMessage() for r in caplog.records)


def test_a_report_that_cannot_be_delivered_is_logged_not_reported_again(
    live: SlackLive, caplog: pytest.LogCaptureFixture
) -> None:
    live.engine.service.security_channel = "C0NOWHERE"  # the security channel is gone too
    caplog.set_level(logging.ERROR, logger="bot.slack.delivery")
    req = live.submit()  # its card goes to a channel that does not exist
    live.eventually(lambda: len(reports(live)) == 1 and reports(live)[0].status == "dead")
    assert reports(live)[0].last_error == "Slack said channel_not_found"
    # Well past any backoff (a later card that itself takes two seconds): still one report,
    # tried once, and nothing about it queued.
    live.slack.rate_limit("chat.postMessage", times=1, retry_after=2)
    live.card(staging(live).id)
    assert len(reports(live)) == 1
    tried = [c for c in live.slack.calls("chat.postMessage") if c.params["channel"] == "C0NOWHERE"]
    assert len(tried) == 1 and req.id in json.dumps(tried[0].params)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("alert.delivery_failed" in m and "not reported in Slack" in m for m in errors)


def reports(live: SlackLive) -> list[OutboxRow]:
    with live.engine.db.read() as session:
        return list(
            session.execute(
                select(OutboxRow).where(OutboxRow.kind == "alert.delivery_failed")
            ).scalars()
        )
