"""The sandbox renders every surface the bot sends with no "unsupported" marker, escapes all
agent text, and keeps Slack's labels, styles and confirm dialogs.

Surfaces are built with the bot's own builders (cards, break-glass alerts, minimal cards,
dead-letter alerts, thread notes, sponsor DMs, security alerts, slash-command answers, the
modals, the App Home tab, the digest), for every request status.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from bot.sandbox.render import (
    Renderer,
    has_unsupported,
    mrkdwn_html,
    request_id_of,
)
from bot.slack.alerts import break_glass_blocks, break_glass_text
from bot.slack.cards import APPROVE, DENY, REVOKE, card_blocks, card_text
from bot.slack.delivery_alerts import (
    dead_letter_blocks,
    dead_letter_text,
    minimal_break_glass_blocks,
    minimal_break_glass_text,
    minimal_card_blocks,
    minimal_card_text,
)
from bot.slack.digest_blocks import digest_message
from bot.slack.notes import alert_text, note_text, sponsor_text
from bot.slack.views import confirm_modal, deny_modal, full_request_view, home_view
from core.facts import Fact, FactKind
from core.model import Status
from core.snapshots import RequestSnapshot
from tests.unit.bot.test_markup_property import NOW, _commands, digest, snapshot, worst_digest

HOSTILE = '<script>alert(1)</script> "quoted" &amp; <!channel> *bold* `tick`'
FIELDS = {
    "agent": "deploy-bot",
    "action": "k8s.rollout_restart",
    "target": HOSTILE,
    "environment": "production",
    "justification": HOSTILE * 3,
    "on_behalf_of": "sam@example.com",
    "reason": HOSTILE,
}
FACT_DATA: dict[str, Any] = {
    "received": 1,
    "required": 2,
    "approvers": ["Alice", "Bob"],
    "claim_until": NOW.isoformat(),
    "reason": HOSTILE,
    "credential": {"expires_at": NOW.isoformat()},
    "outcome": "success",
    "detail": HOSTILE,
    "was": "pending",
    "missing": 1,
    "groups": ["sre-leads"],
    "escalate_to": "security-leads",
    "escalate_at": NOW.isoformat(),
    "to": "security-leads",
    "jti": "jti-1",
    "attempts": 3,
    "error": HOSTILE,
}

render = Renderer({"U0ALICE": "Alice"}.get)  # type: ignore[arg-type]


def snap(status: Status, **changes: Any) -> RequestSnapshot:
    s = snapshot(status, FIELDS, params={"cmd": HOSTILE, "n": 3}, detail=HOSTILE)
    return replace(s, **changes) if changes else s


def check(html: str) -> str:
    assert not has_unsupported(html), html
    assert "<script>" not in html and "<!channel>" not in html
    return html


def check_message(text: str, blocks: list[dict[str, Any]] | None) -> str:
    check(render.message(text, None))  # the text alone, as a notification shows it
    return check(render.message(text, blocks))


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.value)
def test_every_card_and_alert_renders_for_every_status(status: Status) -> None:
    s = snap(status)
    html = check_message(card_text(s), card_blocks(s))
    assert 'data-block-type="header"' in html and 'data-block-type="section"' in html
    assert 'class="sk-fields"' in html and 'data-block-type="context"' in html
    check_message(break_glass_text(s), break_glass_blocks(s))
    reviewed = replace(s, break_glass_reviewed_at=NOW, break_glass_reviewed_by="Carol")
    check_message(break_glass_text(reviewed), break_glass_blocks(reviewed))
    check_message(minimal_card_text(s), minimal_card_blocks(s))
    check_message(minimal_break_glass_text(s), minimal_break_glass_blocks(s))
    report = {"kind": "card.post", "request_id": s.id, "error": HOSTILE, "attempts": 9}
    check_message(dead_letter_text(report, s), dead_letter_blocks(report, s))
    check_message(dead_letter_text(report, None), dead_letter_blocks(report, None))


def test_a_pending_card_has_slacks_buttons_with_their_styles() -> None:
    s = snap(Status.PENDING)
    html = check(render.blocks(card_blocks(s)))
    assert f'class="sk-button sk-primary" data-action-id="{APPROVE}"' in html
    assert f'class="sk-button sk-danger" data-action-id="{DENY}"' in html
    assert ">Approve</button>" in html and ">Deny</button>" in html
    assert request_id_of(card_text(s), card_blocks(s)) == s.id


def test_an_active_card_offers_revoke_behind_a_confirm_dialog() -> None:
    s = snap(Status.ACTIVE)
    html = check(render.blocks(card_blocks(s)))
    assert f'data-action-id="{REVOKE}"' in html
    assert 'data-has-confirm="1"' in html and 'class="sk-confirm-dialog" hidden' in html
    assert 'data-confirm="yes">Revoke</button>' in html


def test_agent_text_is_escaped_and_inert() -> None:
    html = check(render.blocks(card_blocks(snap(Status.PENDING))))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<pre class="sk-code">' in html  # the parameters, as a code block
    assert "<code>" in html  # the target, as a code span


@pytest.mark.parametrize("kind", list(FactKind), ids=lambda k: k.value)
def test_every_thread_note_dm_and_alert_renders(kind: FactKind) -> None:
    fact = Fact(kind, "req_1", NOW, "U0ALICE", dict(FACT_DATA))
    s = snap(Status.PENDING)
    for text in (note_text(fact), sponsor_text(fact, s), alert_text(fact)):
        check_message(text, None)


def test_every_modal_and_the_home_tab_render() -> None:
    s = snap(Status.PENDING)
    deny = check(render.view(deny_modal(s.id, "C0APPROVALS")))
    assert 'data-block-type="input"' in deny and "<textarea" in deny
    assert "sk-view-submit" in deny and "sk-view-close" in deny
    confirm = check(render.view(confirm_modal(s, "C0APPROVALS")))
    assert '<input type="text"' in confirm
    for page in range(3):
        check(render.view(full_request_view(s, page)))
    long = replace(s, justification="x" * 30_000)
    paged = check(render.view(full_request_view(long, 1)))
    assert "sk-button" in paged
    active = snap(Status.ACTIVE)
    check(render.view(home_view([s] * 3, [active] * 3)))
    check(render.view(home_view([], [])))


def test_the_digest_and_command_answers_render() -> None:
    for d in (digest(FIELDS), worst_digest(FIELDS)):
        text, blocks = digest_message(d)
        html = check_message(text, json.loads(blocks))
        assert 'data-block-type="divider"' in html
    for answer in _commands([snap(Status.PENDING)]):
        check_message(answer, None)


def test_an_unknown_block_or_element_shows_the_marker_and_fails_the_check() -> None:
    unknown = [
        {"type": "rich_text", "elements": []},
        {"type": "actions", "elements": [{"type": "datepicker", "action_id": "d"}]},
        {"type": "section", "text": {"type": "markdown", "text": "x"}},
    ]
    for block in unknown:
        html = render.blocks([block])
        assert has_unsupported(html) and "UNSUPPORTED" in html
        with pytest.raises(AssertionError):
            check(html)
    assert has_unsupported(render.view({"type": "workflow_step", "blocks": []}))


def test_mrkdwn_reads_slacks_entities_and_markup() -> None:
    html = mrkdwn_html("*Target*\n`a&lt;b&amp;c` <!date^1700000000^{date}|fallback> :warning:")
    assert html.startswith("<b>Target</b><br><code>a&lt;b&amp;c</code>")
    assert '<time datetime="2023-11-14T22:13:20+00:00">2023-11-14 22:13:20 UTC</time>' in html
    assert "\u26a0" in html
    assert mrkdwn_html("<@U0ALICE>", {"U0ALICE": "Alice"}.__getitem__).endswith("@Alice</span>")
    assert mrkdwn_html('<javascript:alert(1)|x"y>') == "&lt;javascript:alert(1)|x&quot;y&gt;"
