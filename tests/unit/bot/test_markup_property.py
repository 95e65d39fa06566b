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
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack.alerts import break_glass_blocks, break_glass_text
from bot.slack.cards import card_blocks, card_text
from bot.slack.delivery_alerts import (
    dead_letter_blocks,
    dead_letter_text,
    minimal_card_blocks,
    minimal_card_text,
)
from bot.slack.digest_blocks import digest_blocks, digest_message
from bot.slack.handlers import ApprovalActions
from bot.slack.markup import MESSAGE_BLOCKS, MESSAGE_TEXT, TEXT_OBJECT
from bot.slack.notes import alert_text, note_text, sponsor_text
from bot.slack.views import (
    HOME_ACTIVE_MAX,
    HOME_CONTEXT_MAX,
    HOME_PENDING_MAX,
    confirm_modal,
    full_request_view,
    home_view,
)
from bot.slack_emulator.block_limits import check_blocks, check_text, check_view
from core.digest import (
    ActiveCredential,
    AuditStatus,
    BreakGlassUse,
    DecisionTimes,
    Denial,
    Digest,
    Expired,
    RefusedClick,
    RequestRef,
    RevocationFailure,
    render_text,
)
from core.facts import Fact, FactKind
from core.model import ActionClass, Approver, Status, Tier
from core.snapshots import CredentialInfo, RequestSnapshot, VoteInfo
from core.terms import Terms
from tests.slack_markup_check import (
    check_mrkdwn,
    check_payload,
    check_verdicts_first,
    check_verdicts_outside_spans,
)

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


# -- explicit worst cases: every field at its API maximum, one character class at a time -----

# Characters that grow most when escaped (&, <), that a span must neutralise (backtick), that
# are two UTF-16 units (astral emoji and math letters), line breaks, and whitespace only.
WORST_CHARS = ["&", "<", "`", "\U0001f600", "\U0001d400", "\n", "\u2028", " "]
API_MAX = {
    "agent": 128,
    "action": 256,
    "target": 512,
    "environment": 64,
    "justification": 4000,
    "on_behalf_of": 320,
    "reason": 2000,
}


def worst_fields(char: str) -> dict[str, str]:
    f = {name: char * size for name, size in API_MAX.items()}
    f["on_behalf_of"] = char * (320 - len("@x.com")) + "@x.com"
    return f


def worst_digest(f: dict[str, str], n: int = 30) -> Digest:
    ref = RequestRef("req_1", f["agent"], f["action"], f["target"], f["environment"], "high")
    many = tuple(f["agent"] + str(i) for i in range(8))
    return replace(
        digest(f),
        expired=tuple(Expired(ref, NOW, "pending" if i % 2 else "approved") for i in range(n)),
        denials=tuple(Denial(ref, NOW, f["agent"], None, f["reason"]) for _ in range(n)),
        refused_clicks=tuple(
            RefusedClick(NOW, f["target"], f["agent"], "ineligible") for _ in range(n)
        ),
        break_glass=tuple(
            BreakGlassUse(ref, NOW, f["action"], "active", f["agent"] if i % 2 else None, NOW)
            for i in range(n)
        ),
        active_credentials=tuple(
            ActiveCredential(ref, NOW, f["action"], many if i % 2 else ()) for i in range(n)
        ),
        top_agents=tuple((f["agent"] + str(i), 9) for i in range(5)),
        top_targets=tuple((f["target"] + str(i), 9) for i in range(5)),
    )


class _Service:
    def __init__(self, pending: list[RequestSnapshot]) -> None:
        self.pending = pending
        self.policy = SimpleNamespace(current=SimpleNamespace(groups={}))

    def dashboard(self, *_: object, **__: object) -> tuple[list[RequestSnapshot], list[Any]]:
        return self.pending, []

    def get_for_person(self, *_: object, **__: object) -> RequestSnapshot:
        return self.pending[0]


class _Directory:
    def approver(self, user_id: str) -> Approver:
        return Approver(slack_user_id=user_id, email="alice@example.com", name="Alice")


def _commands(snaps: list[RequestSnapshot]) -> list[str]:
    actions = ApprovalActions(_Service(snaps), None, _Directory())  # type: ignore[arg-type]
    return [
        actions.command("pending", "U0ALICE", None),
        actions.command(f"status {snaps[0].id}", "U0ALICE", None),
    ]


def check_all(text: str, blocks: list[dict[str, Any]]) -> None:
    check_text(text)
    check_blocks(blocks, limit=MESSAGE_BLOCKS, error="invalid_blocks")
    check_mrkdwn(text)
    check_verdicts_outside_spans(text)
    check_payload(blocks)
    check_verdicts_first(blocks)


@pytest.mark.parametrize("char", WORST_CHARS, ids=ascii)
def test_every_surface_fits_slack_with_every_field_at_its_api_maximum(char: str) -> None:
    f = worst_fields(char)
    snaps = [
        snapshot(status, f, params={char * 100: char * 2000}, detail=char * 4000)
        for status in Status
    ]
    for s in snaps:
        check_all(card_text(s), card_blocks(s))
        check_all(break_glass_text(s), break_glass_blocks(s))
        check_all(minimal_card_text(s), minimal_card_blocks(s))
        report = {"kind": "card.post", "request_id": s.id, "error": char * 5000, "attempts": 9}
        check_all(dead_letter_text(report, s), dead_letter_blocks(report, s))
    pending = [s for s in snaps if s.status is Status.PENDING] * 20
    active = [s for s in snaps if s.status is Status.ACTIVE] * 20
    for view in (home_view(pending, active), home_view(pending[:3], active[:3])):
        check_view(view)
        check_payload(view)
        check_verdicts_first(view)
    for answer in _commands(pending):
        check_text(answer)
        check_mrkdwn(answer)
        check_verdicts_outside_spans(answer)
    text, blocks = digest_message(worst_digest(f))
    assert len(text) <= MESSAGE_TEXT
    check_all(text, json.loads(blocks))


def test_app_home_item_budgets_sum_within_a_section() -> None:
    assert max(HOME_PENDING_MAX, HOME_ACTIVE_MAX, HOME_CONTEXT_MAX) <= TEXT_OBJECT
    f = {"agent": "a", "action": "&" * 256, "target": "&" * 512, "environment": "&" * 64}
    f |= {"justification": "j", "on_behalf_of": "&" * 300 + "@x.com", "reason": "r"}
    pending = snapshot(Status.PENDING, f, params={}, detail="d")
    active = snapshot(Status.ACTIVE, f | {"agent": "&" * 128}, params={}, detail="d")
    check_view(home_view([pending] * 20, [active] * 20))


FORGED = (
    "orders-db (staging) at 2026-11-03 08:58 UTC, rule staging-bg, now completed — "
    "reviewed by alice@example.com at 2026-11-03 09:01 UTC"
)


def test_a_forged_break_glass_line_cannot_hide_unreviewed() -> None:
    f = worst_fields("x") | {"target": FORGED.ljust(512, " ")}
    ref = RequestRef("req_1", "bot", "db.drop", f["target"], "production", "high")
    d = replace(digest(f), break_glass=(BreakGlassUse(ref, NOW, "prod-bg", "active", None, None),))
    [section] = [
        b["text"]["text"]
        for b in digest_blocks(d)
        if "Break-glass" in b.get("text", {}).get("text", "")
    ]
    item = section.split("\n")[1]
    assert item.startswith("• UNREVIEWED, now active — "), item
    check_verdicts_outside_spans(section, ("UNREVIEWED", "now active"))
    [line] = [x for x in render_text(d).splitlines() if "UNREVIEWED" in x]
    assert line.startswith("  - UNREVIEWED, now active"), line


def test_notification_text_names_stepups_words_before_the_agents() -> None:
    f = worst_fields("x") | {"action": "logs.read` on `staging-cache` in `dev" + "\u2800" * 200}
    f |= {"target": "payments-api", "environment": "production"}
    s = snapshot(Status.PENDING, f, params={}, detail="d")
    text = card_text(s)
    assert text.startswith(":lock: Approval needed — tier high, `production` — `req_"), text
    assert text.endswith(" on `payments-api`") and len(text) < 300, text
