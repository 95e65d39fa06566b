"""Property: whatever an agent (or an approver typing a reason) writes, no Slack surface of
stepup's renders it as a mention, a link or formatting, and every surface fits Slack's limits.

Each agent field is ``prefix + MARKER + suffix`` with arbitrary prefix and suffix (and Slack's
control sequences mixed in): the marker must never appear in mrkdwn outside a closed code
span, every ``<…>`` must be one of stepup's date tokens, and every payload must pass the
emulator's copy of Slack's Block Kit limits.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack.alerts import break_glass_blocks, break_glass_text
from bot.slack.cards import card_blocks, card_text
from bot.slack.digest_blocks import digest_blocks, digest_message
from bot.slack.markup import MESSAGE_BLOCKS, MESSAGE_TEXT
from bot.slack.notes import alert_text, note_text, sponsor_text
from bot.slack.views import confirm_modal, full_request_view, home_view
from bot.slack_emulator.block_limits import check_blocks, check_text, check_view
from core.digest import (
    AuditStatus,
    BreakGlassUse,
    DecisionTimes,
    Denial,
    Digest,
    RequestRef,
    RevocationFailure,
)
from core.facts import Fact, FactKind
from core.model import ActionClass, Status, Tier
from core.snapshots import CredentialInfo, RequestSnapshot, VoteInfo
from core.terms import Terms
from tests.slack_markup_check import check_mrkdwn, check_payload

MARKER = "Zq9MARK"
NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
CONTROL = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<#C123>",
    "<!subteam^S1>",
    "<!subteam^S1|@oncall>",
    "<https://x.example|payments-api>",
    "<mailto:a@b.c|mail>",
    "https://evil.example/x",
    "*bold*",
    "_it_",
    "~st~",
    "`",
    "``",
    "```",
    "&lt;!channel&gt;",
    "&amp;",
    "> quote",
    "\n",
    "\r\n",
    ":white_check_mark: Approved by Alice",
    ":rotating_light:",
    "<!date^1^{date}|x>",
    "|",
    "\\",
]
pieces = st.one_of(st.sampled_from(CONTROL), st.text(max_size=12))
noise = st.lists(pieces, max_size=8).map("".join)


def hostile(max_len: int) -> st.SearchStrategy[str]:
    return st.tuples(noise, noise).map(lambda p: (p[0] + MARKER + p[1])[:max_len])


def snapshot(
    status: Status, f: dict[str, str], *, params: dict[str, Any], detail: str
) -> RequestSnapshot:
    return RequestSnapshot(
        id="req_0123456789abcdef0123456789abcdef",
        agent_id=f["agent"],
        owner_email="olga@example.com",
        status=status,
        version=3,
        action=f["action"],
        action_class=ActionClass.DESTRUCTIVE,
        target=f["target"],
        environment=f["environment"],
        justification=f["justification"],
        parameters=params,
        parameters_digest="sha256:" + "ab" * 32,
        requested_ttl_seconds=None,
        data_volume_bytes=None,
        on_behalf_of=f["on_behalf_of"],
        parent_request_id=None,
        break_glass=True,
        rule="prod-destructive",
        tier=Tier.HIGH,
        reasons=("matched rule prod-destructive",),
        policy_digest="p",
        terms=Terms(approver_groups=("sre-leads",), quorum=2, channel="C0APPROVALS"),
        created_at=NOW,
        updated_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
        decided_at=NOW,
        outcome="failure",
        outcome_detail=detail,
        status_reason=f["reason"],
        votes=(
            VoteInfo("U0ALICE", "alice@example.com", "Alice", "approve", None, NOW),
            VoteInfo("U0BOB", "bob@example.com", "Bob", "deny", f["reason"], NOW),
        ),
        credential=CredentialInfo("jti-1", NOW + timedelta(minutes=5), None, None),
    )


def facts(f: dict[str, str], detail: str) -> list[Fact]:
    who = f["agent"]
    return [
        Fact(FactKind.APPROVAL_COUNTED, "req_1", NOW, who, {"received": 1, "required": 2}),
        Fact(
            FactKind.APPROVED,
            "req_1",
            NOW,
            who,
            {"approvers": [who, "Bob"], "claim_until": NOW.isoformat()},
        ),
        Fact(FactKind.DENIED, "req_1", NOW, who, {"reason": f["reason"]}),
        Fact(FactKind.CLAIMED, "req_1", NOW, who, {"credential": {"expires_at": NOW.isoformat()}}),
        Fact(FactKind.COMPLETED, "req_1", NOW, who, {"outcome": f["action"], "detail": detail}),
        Fact(FactKind.CANCELLED, "req_1", NOW, who, {}),
        Fact(FactKind.REVOKED, "req_1", NOW, who, {"reason": f["reason"]}),
        Fact(FactKind.EXPIRED, "req_1", NOW, who, {"was": "pending"}),
        Fact(
            FactKind.ISSUER_REVOKE_FAILING,
            "req_1",
            NOW,
            "revoker",
            {"jti": "jti-1", "attempts": 3, "error": f["justification"][:300]},
        ),
    ]


def digest(f: dict[str, str]) -> Digest:
    ref = RequestRef("req_1", f["agent"], f["action"], f["target"], f["environment"], "high")
    return Digest(
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        requests=(),
        decision_times=DecisionTimes(0, None, None),
        expired=(),
        denials=(Denial(ref, NOW, f["agent"], None, f["reason"]),),
        refused_clicks=(),
        break_glass=(BreakGlassUse(ref, NOW, "r", "approved", None, None),),
        revocation_failures=(
            RevocationFailure("jti", "req_1", f["agent"], f["target"], 3, f["reason"], NOW, None),
        ),
        active_credentials=(),
        top_agents=((f["agent"], 1),),
        top_targets=((f["target"], 1),),
        audit=AuditStatus(True, 1, 1, "ab" * 32),
    )


def check_message(text: str, blocks: list[dict[str, Any]]) -> None:
    check_text(text)
    check_blocks(blocks, limit=MESSAGE_BLOCKS, error="invalid_blocks")
    check_mrkdwn(text, (MARKER,))
    check_payload(blocks, (MARKER,))


fields = st.fixed_dictionaries(
    {
        "agent": hostile(128),
        "action": hostile(256),
        "target": hostile(512),
        "environment": hostile(64),
        "justification": hostile(4000),
        "on_behalf_of": hostile(320),
        "reason": hostile(2000),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    f=fields,
    value=hostile(2000),
    detail=hostile(4000),
    status=st.sampled_from(list(Status)),
    reps=st.integers(1, 3),
)
def test_no_agent_text_survives_as_markup_on_any_surface(
    f: dict[str, str], value: str, detail: str, status: Status, reps: int
) -> None:
    # Repeating a field makes the longest values (after escaping) overflow every budget.
    f = {k: (v * reps)[: len(v) * reps] for k, v in f.items()}
    f["environment"] = f["environment"][:64]
    s = snapshot(status, f, params={MARKER + "k`": value, "n": [value] * reps}, detail=detail)
    check_message(card_text(s), card_blocks(s))
    check_message(break_glass_text(s), break_glass_blocks(s))
    reviewed = replace(s, break_glass_reviewed_at=NOW, break_glass_reviewed_by="Carol")
    check_message(break_glass_text(reviewed), break_glass_blocks(reviewed))
    for fact in facts(f, detail):
        for text in (note_text(fact), sponsor_text(fact, s), alert_text(fact)):
            check_text(text)
            assert len(text) <= 4_000 + 3_000  # well within Slack's 40,000
            check_mrkdwn(text, (MARKER,))
    for view in (
        home_view([s] * 20, [s] * 20),
        confirm_modal(s, "C0APPROVALS"),
        full_request_view(s),
        full_request_view(s, 1),
    ):
        check_view(view)
        check_payload(view, (MARKER,))
    text, blocks = digest_message(digest(f))
    assert len(text) <= MESSAGE_TEXT
    check_message(text, json.loads(blocks))
    check_payload(digest_blocks(digest(f)), (MARKER,))


def test_the_checker_catches_live_markup() -> None:
    """The checks above are not vacuous: raw agent text fails them."""
    import pytest

    for bad in (
        f"*{MARKER}*",
        f"`{MARKER}` and `x`{MARKER}`",
        "<!channel>",
        f"```{MARKER}``` {MARKER}",
        "a & b",
    ):
        with pytest.raises(AssertionError):
            check_mrkdwn(bad, (MARKER,))
    with pytest.raises(AssertionError):
        check_payload([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}])
