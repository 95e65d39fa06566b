"""What approvers see, checked on what the Slack emulator received over HTTP: agent text can't
spoof a card, a note, a DM or an alert, and no value is long enough to make Slack refuse one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.slack.cards import (
    APPROVE,
    DENY,
    DENY_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    SHOW_ALL,
    SHOW_PAGE,
)
from bot.slack_emulator.entities import Call
from core.inputs import intent_from_mapping
from core.model import SessionOutcome, Status
from core.storage.database import Database
from tests.integration.slack_env import SPONSOR, SlackLive, slack_live
from tests.slack_markup_check import check_mrkdwn, check_payload, text_objects
from tests.support import eventually, submit_body

SECURITY = "C0SECURITY"
POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB]
channels:
  approvals: C0APPROVALS
rules:
  - name: anything-destructive
    match: { action_class: destructive }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 1
    channel: approvals
    break_glass: true
"""


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[SlackLive]:
    with slack_live(db, tmp_path, POLICY) as env:
        env.slack.add_channel(SECURITY, "security")
        env.engine.service.security_channel = SECURITY
        yield env


def posts(live: SlackLive, request_id: str) -> list[Call]:
    """Every chat.postMessage and chat.update about the request (its card, the card's thread,
    DMs and alerts naming it), as Slack received them."""
    calls = [c for c in live.slack.calls() if c.method in ("chat.postMessage", "chat.update")]
    cards = {
        str(c.response.get("ts"))
        for c in calls
        if c.ok and request_id in json.dumps(c.params) and not c.params.get("thread_ts")
    }
    return [
        c for c in calls if request_id in json.dumps(c.params) or c.params.get("thread_ts") in cards
    ]


def mrkdwn_strings(call: Call) -> list[str]:
    blocks = call.params.get("blocks")
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks or []
    found = [str(call.params.get("text") or "")]
    found += [o["text"] for o in text_objects(blocks) if o["type"] == "mrkdwn"]
    return found


def card_call(live: SlackLive, request_id: str) -> Call:
    live.card(request_id)
    return next(c for c in posts(live, request_id) if not c.params.get("thread_ts"))


def inert(call: Call, *agent_text: str) -> None:
    """Nothing the agent wrote is live in this call: not in its text, not in its blocks."""
    assert call.ok, call.response
    assert call.params.get("unfurl_links") in (False, "false", "0", 0)
    assert call.params.get("unfurl_media") in (False, "false", "0", 0)
    check_mrkdwn(str(call.params.get("text") or ""))
    blocks = call.params.get("blocks")
    check_payload(json.loads(blocks) if isinstance(blocks, str) else blocks or [])
    live_text = "\n".join(mrkdwn_strings(call))
    for text in agent_text:
        assert text not in live_text, f"{text!r} reached Slack as mrkdwn"


def test_mentions_in_the_justification_ping_nobody(live: SlackLive) -> None:
    attack = "urgent <!channel> <!here> <!everyone> <@U0ALICE> <!subteam^S0ONCALL> <#C0APPROVALS>"
    req = live.submit(justification=attack)
    call = card_call(live, req.id)
    inert(call, "<!channel>", "<!here>", "<!everyone>", "<@U0ALICE>", "<!subteam^", "<#C0")
    # The approver still reads exactly what the agent wrote, as plain text.
    plain = [b["text"] for b in call.params["blocks"] if b["type"] == "section" and "text" in b]
    assert {"type": "plain_text", "text": attack, "emoji": False} in plain


def test_a_relabelled_link_shows_its_real_target(live: SlackLive) -> None:
    target = "<https://evil.example/steal|payments-api>"
    req = live.submit(target=target)
    call = card_call(live, req.id)
    inert(call, "<https://evil.example", target)
    assert "&lt;https://evil.example/steal|payments-api&gt;" in json.dumps(call.params)


def test_a_fake_approved_line_stays_words(live: SlackLive) -> None:
    fake = "routine\n\n*:white_check_mark: Approved by Alice Archer and Bob Baker*\n> policy ok"
    req = live.submit(justification=fake, target="*:white_check_mark: approved*")
    call = card_call(live, req.id)
    inert(call)
    blocks = call.params["blocks"]
    # The justification is plain text with emoji off, not a formatted line.
    assert {"type": "plain_text", "text": fake, "emoji": False} in [b.get("text") for b in blocks]
    assert "`*:white_check_mark: approved*`" in json.dumps(blocks)


def test_triple_backticks_in_a_parameter_cannot_close_the_code_block(live: SlackLive) -> None:
    value = "x```\n<!channel> *approved* <https://evil.example|ok>\n```"
    req = live.submit(parameters={"cmd": value})
    call = card_call(live, req.id)
    inert(call, "<!channel>", "<https://evil")
    [params] = [
        b["text"]["text"]
        for b in call.params["blocks"]
        if b["type"] == "section" and b["text"]["text"].startswith("*Parameters*")
    ]
    assert params.count("```") == 2 and params.endswith("```")


def test_notes_and_the_sponsor_dm_keep_reasons_and_details_inert(live: SlackLive) -> None:
    req = live.submit(on_behalf_of=SPONSOR, action="<!channel> *deploy*")
    card = live.card(req.id)
    live.sim.click(DENY, req.id, "U0ALICE", message=card)
    modal = live.slack.wait_for("views.open")[0].params
    reason = "no <!here> <https://evil.example|see policy> ```"
    meta = (
        json.loads(modal["view"])["private_metadata"]
        if isinstance(modal["view"], str)
        else modal["view"]["private_metadata"]
    )
    live.sim.submit_view(
        DENY_MODAL, {REASON_BLOCK: {REASON_INPUT: reason}}, "U0ALICE", private_metadata=meta
    )
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.DENIED)

    def note_and_dm() -> list[Call]:
        found = [c for c in posts(live, req.id) if c.params.get("thread_ts")]
        found += [
            c
            for c in live.slack.calls("chat.postMessage")
            if c.params.get("channel") == "U0SAM" and "Denied" in str(c.params.get("text"))
        ]
        return found

    calls = eventually(note_and_dm, until=lambda found: len(found) >= 2)
    for call in calls:
        inert(call, "<!here>", "<!channel>", "<https://evil")
        assert "no &lt;!here&gt;" in str(call.params["text"])
    for call in posts(live, req.id):  # the refreshed card shows the reason inertly too
        inert(call, "<!here>", "<!channel>", "<https://evil")


def deep(depth: int, width: int) -> Any:
    """A nested list whose indented JSON is many times its compact size."""
    value: Any = [0] * width
    for _ in range(depth):
        value = [value]
    return value


def long_fields() -> dict[str, Any]:
    """Every agent field at its API maximum, made of what escaping makes longest (names: of
    their safe set, which is all the API accepts in them — core/names.py)."""
    worst = "&<>`*" * 1000
    fields = submit_body(
        action=("a_@" * 100)[:256],
        target=("t_/=" * 200)[:512],
        environment=("e+" * 40)[:64],
        justification=worst[:4000],
        parameters={"cmd": worst[:3000] + "```", "deep": deep(30, 18_000)},
        on_behalf_of=("s&" * 200)[:300] + "@example.com",
    )
    assert len(fields["on_behalf_of"]) <= 320
    assert len(json.dumps(fields).encode()) < 64 * 1024  # within the API's body limit
    return fields


def test_every_field_at_its_maximum_is_delivered_and_readable_in_full(live: SlackLive) -> None:
    fields = long_fields()
    live.slack.add_user("U0SPONSOR", fields["on_behalf_of"], name="sponsor")
    submit = live.engine.service.submit
    intent = intent_from_mapping(fields, agent=live.agent.id)  # the API's own validation
    req, _ = submit(live.agent, intent, now=datetime.now(UTC))
    glass = intent_from_mapping({**fields, "break_glass": True}, agent=live.agent.id)
    broken, _ = submit(live.agent, glass, now=datetime.now(UTC))
    assert broken.status is Status.APPROVED  # break-glass: granted now, reviewed later

    card = card_call(live, req.id)
    alert = live.slack.wait_for(
        lambda c: c.method == "chat.postMessage" and c.params.get("channel") == SECURITY
    )[0]
    assert broken.id in json.dumps(alert.params)
    for call in (card, alert):
        inert(call)
        body = json.dumps(call.params["blocks"])
        assert "more characters)" in body and SHOW_ALL in body and "Show all" in body
        assert "read all of it before you decide" in body

    live.sim.click(APPROVE, req.id, "U0ALICE", message=live.card(req.id))
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    live.engine.service.claim(req.id, live.agent, now=datetime.now(UTC))
    detail = ("d&<`" * 1000)[:4000]
    live.engine.service.complete(
        req.id, live.agent, SessionOutcome.FAILED, detail, now=datetime.now(UTC)
    )

    def delivered() -> list[Call]:
        return [c for c in posts(live, req.id) if "Completed" in str(c.params.get("text"))]

    def note_and_dm(found: list[Call]) -> bool:
        return any(c.params.get("thread_ts") for c in found) and any(
            c.params["channel"] == "U0SPONSOR" for c in found
        )

    eventually(delivered, until=note_and_dm)
    for call in posts(live, req.id):
        inert(call)  # every post and update of this request was accepted by Slack
    refused = [c for c in live.slack.calls() if not c.ok]
    assert refused == [], [(c.method, c.response) for c in refused]

    # Show all: every value, exactly as the agent sent it, over as many pages as it takes.
    live.sim.click(SHOW_ALL, req.id, "U0ALICE", message=live.card(req.id))
    opened = live.slack.wait_for("views.open")[0]
    assert opened.ok, opened.response
    view = live.slack.views_opened()[-1]
    pages = [view.payload]
    while SHOW_PAGE in json.dumps(pages[-1]["blocks"]) and "Next page" in json.dumps(
        pages[-1]["blocks"]
    ):
        before = len(live.slack.calls("views.update"))
        live.sim.click(SHOW_PAGE, f"{req.id} {len(pages)}", "U0ALICE", view=pages[-1])
        update = live.slack.wait_for("views.update", count=before + 1)[-1]
        assert update.ok, update.response
        pages.append(live.slack.view(view.id).payload)
    assert len(pages) >= 2
    shown = "".join(
        b["text"]["text"]
        for page in pages
        for b in page["blocks"]
        if b["type"] == "section" and b["text"]["type"] == "plain_text"
    )
    assert fields["justification"] in shown and fields["target"] in shown
    assert fields["on_behalf_of"] in shown and detail in shown
    assert json.dumps(fields["parameters"], indent=1, sort_keys=True) in shown
    for page in pages:
        check_payload(page)


def test_a_short_request_has_no_show_all(live: SlackLive) -> None:
    req = live.submit(on_behalf_of=SPONSOR)
    call = card_call(live, req.id)
    body = json.dumps(call.params["blocks"])
    assert SHOW_ALL not in body and "more characters" not in body and APPROVE in body
    assert f"`{SPONSOR}` (stated by the agent, not verified)" in body
