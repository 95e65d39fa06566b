"""Block Kit for approval cards. Pure functions of a snapshot.

Every word an agent wrote goes through ``bot.slack.markup`` (plain_text, or a code span or
block it cannot close), and every block stays within Slack's limits: what does not fit is cut
with a visible "… (N more characters)", the card says so next to its buttons, and **Show all**
opens the whole request (``bot.slack.views.full_request_view``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.slack.markup import (
    EMPTY,
    FIELD_TEXT,
    TEXT_OBJECT,
    Shown,
    code,
    escape,
    label,
    md,
    person,
    plain,
    when,
)
from core.approvals import tally
from core.durations import format_duration
from core.model import Status
from core.snapshots import RequestSnapshot
from core.usecases.sessions import credential_ttl

__all__ = ["when"]

APPROVE = "stepup_approve"
DENY = "stepup_deny"
REVOKE = "stepup_revoke"
SHOW_ALL = "stepup_show_all"
SHOW_PAGE = "stepup_show_page"
BREAK_GLASS_ACK = "stepup_break_glass_ack"
DENY_MODAL = "stepup_deny_modal"
CONFIRM_MODAL = "stepup_confirm_modal"
FULL_VIEW = "stepup_full_request"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
CONFIRM_BLOCK = "confirm"
CONFIRM_INPUT = "confirm_input"
NOT_VERIFIED = "(stated by the agent, not verified)"
VERIFIED = "(verified: from its workload token)"
CUT_WARNING = (
    ":warning: Part of this request is too long for Slack and is cut above. "
    "Press *Show all* and read all of it before you decide."
)

# Budgets (characters as sent, escaping included) within Slack's limits.
HEADLINE = {"action": 700, "target": 1_400, "environment": 400}  # one section text: 3,000
FIELD_VALUE = FIELD_TEXT - 100  # a field's label and notes take the rest
LONG_TEXT = TEXT_OBJECT - 100
OUTCOME_TEXT = 1_200  # a reason or detail in the outcome line (a context element: 3,000)

_TITLES = {
    Status.PENDING: ":lock: Approval needed",
    Status.APPROVED: ":white_check_mark: Approved — waiting for the agent to claim",
    Status.ACTIVE: ":key: Credential active",
    Status.COMPLETED: ":checkered_flag: Completed",
    Status.DENIED: ":no_entry: Denied",
    Status.EXPIRED: ":hourglass: Expired",
    Status.CANCELLED: ":heavy_multiplication_x: Cancelled",
    Status.REVOKED: ":octagonal_sign: Revoked",
}


def parameters_json(snapshot: RequestSnapshot) -> str:
    return json.dumps(snapshot.parameters, indent=1, sort_keys=True, ensure_ascii=False)


def headline(snapshot: RequestSnapshot, shown: Shown, budget: dict[str, int] = HEADLINE) -> str:
    """Action on target in environment, each its own code span within its ``budget``."""
    s = snapshot
    return (
        f"{shown.code(s.action, budget['action'])} on "
        f"{shown.code(s.target, budget['target'])} in "
        f"{shown.code(s.environment, budget['environment'])}"
    )


def sponsor(snapshot: RequestSnapshot, shown: Shown, limit: int = FIELD_VALUE) -> str:
    if not snapshot.on_behalf_of:
        return EMPTY
    return f"{shown.code(snapshot.on_behalf_of, limit)} {sponsor_mark(snapshot)}"


def sponsor_mark(snapshot: RequestSnapshot) -> str:
    """Whether the sponsor came from the workload token (docs/identity.md) or only the agent."""
    return VERIFIED if snapshot.sponsor_verified else NOT_VERIFIED


def agent(snapshot: RequestSnapshot, shown: Shown) -> str:
    return (
        f"{shown.code(snapshot.agent_id, FIELD_VALUE // 2)} "
        f"(owner {shown.code(snapshot.owner_email, FIELD_VALUE // 2 - 20)})"
    )


def approvals_text(snapshot: RequestSnapshot, limit: int = FIELD_VALUE) -> str:
    count = tally(snapshot.votes, snapshot.terms.quorum)
    line = f"{count.received} of {count.required}"
    names = [
        f"{person(v.name or v.email or v.slack_user_id)} ({when(v.at)})" for v in snapshot.approvals
    ]
    for index, name in enumerate(names):
        sep = ": " if index == 0 else ", "
        if len(line) + len(sep) + len(name) + 20 > limit:
            return f"{line}, and {len(names) - index} more"
        line += sep + name
    return line


def credential_text(snapshot: RequestSnapshot, shown: Shown) -> str:
    """What an approval will issue, for how long: the issuer's account of the grant (its
    values may come from the agent, so shown as code) or stepup's own token."""
    terms = snapshot.terms
    ttl = credential_ttl(snapshot)
    if terms.issuer is None or not terms.issues:
        return f"stepup token (JWT), {format_duration(ttl)}"
    line = f"{shown.code(terms.issues, FIELD_VALUE - 60)}, {format_duration(ttl)}"
    if terms.issuer_type == "aws_sts":
        line += " (an AWS session cannot be cut short)"
    return line


def outcome_text(snapshot: RequestSnapshot, shown: Shown) -> str:
    s, status = snapshot, snapshot.status
    reason = shown.code(s.status_reason, OUTCOME_TEXT) if s.status_reason else ""
    if status is Status.PENDING:
        return f"Decide before {when(s.expires_at)}"
    if status is Status.DENIED:
        deniers = [v for v in s.votes if v.vote == "deny"]
        by = person(deniers[0].name or deniers[0].email) if deniers else "policy"
        return f"Denied by {by} at {when(s.decided_at)}: {reason}"
    if status is Status.APPROVED:
        return f"Decided at {when(s.decided_at)}; claim before {when(s.expires_at)}"
    if status is Status.ACTIVE and s.credential is not None:
        until = when(s.credential.expires_at)
        return f"Credential {code(s.credential.jti)} active until {until}"
    if status is Status.COMPLETED:
        detail = f" — {shown.code(s.outcome_detail, OUTCOME_TEXT)}" if s.outcome_detail else ""
        outcome = shown.code(s.outcome, 100)
        return f"Completed at {when(s.updated_at)}: {outcome}{detail}. Credential revoked."
    if status is Status.EXPIRED:
        return f"Expired at {when(s.updated_at)} — {reason or 'no decision'}"
    return f"{status.value.capitalize()} at {when(s.updated_at)}: {reason or EMPTY}"


def button(action_id: str, value: str, text: str, style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": value,
        "text": plain(text),
    }
    if style:
        element["style"] = style
    return element


def show_all_button(request_id: str) -> dict[str, Any]:
    return button(SHOW_ALL, request_id, "Show all")


def footer(snapshot: RequestSnapshot) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [md(f"{code(snapshot.id)} · {code(snapshot.parameters_digest)}")],
    }


def long_sections(snapshot: RequestSnapshot, shown: Shown) -> list[dict[str, Any]]:
    """The justification (plain text, exactly as written) and the parameters (a code block)."""
    return [
        {"type": "section", "text": md("*Justification*")},
        {"type": "section", "text": shown.plain(snapshot.justification, LONG_TEXT)},
        {
            "type": "section",
            "text": md(
                "*Parameters*\n" + shown.code_block(parameters_json(snapshot), LONG_TEXT - 20)
            ),
        },
    ]


def _revoke_button(request_id: str) -> dict[str, Any]:
    element = button(REVOKE, request_id, "Revoke", "danger")
    element["confirm"] = {
        "title": plain("Revoke now?"),
        "text": md("The agent's credential stops working at once."),
        "confirm": plain("Revoke"),
        "deny": plain("Keep"),
    }
    return element


def delegated_text(chain: Sequence[tuple[str, str]], shown: Shown) -> str:
    """*Delegated by* root agent (its request) → … → this agent (this request): a child
    request's chain (docs/delegation.md), every name as code. Long chains are cut in the
    middle, never at the ends (who started it, who asks now)."""
    links = [
        f"{shown.code(agent, 120)} ({shown.code(request_id, 60)})" for agent, request_id in chain
    ]
    if len(links) > 6:
        links = [*links[:2], f"… {len(links) - 4} more …", *links[-2:]]
    return "*Delegated by* " + " → ".join(links)


def card_blocks(
    snapshot: RequestSnapshot, chain: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """``chain``: for a delegated request, (agent, request id) from the root down to it."""
    s = snapshot
    shown = Shown()
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain(_TITLES[s.status], emoji=True)},
        {
            "type": "section",
            "text": md(headline(s, shown)),
            "fields": [
                label("Agent", agent(s, shown)),
                label("Sponsor", sponsor(s, shown)),
                label("Action", f"{shown.code(s.action, FIELD_VALUE)} ({s.action_class.value})"),
                label("Target", shown.code(s.target, FIELD_VALUE)),
                label("Environment", shown.code(s.environment, FIELD_VALUE)),
                label("Tier", s.tier.value),
                label("Rule", code(s.rule or EMPTY)),
                label("Approvals", approvals_text(s)),
                label("Credential", credential_text(s, shown)),
            ],
        },
        *([{"type": "section", "text": md(delegated_text(chain, shown))}] if chain else []),
        *long_sections(s, shown),
        {"type": "section", "text": md("*Why*\n" + reasons_text(s))},
        {"type": "context", "elements": [md(outcome_text(s, shown))]},
    ]
    buttons: list[dict[str, Any]] = []
    if s.status is Status.PENDING:
        buttons = [
            button(APPROVE, s.id, "Approve", "primary"),
            button(DENY, s.id, "Deny", "danger"),
        ]
    elif s.status in (Status.APPROVED, Status.ACTIVE):
        buttons = [_revoke_button(s.id)]
    if shown.cut:
        blocks.append({"type": "context", "elements": [md(CUT_WARNING)]})
        buttons.append(show_all_button(s.id))
    if buttons:
        block_id = {Status.PENDING: "decision", Status.APPROVED: "revoke", Status.ACTIVE: "revoke"}
        blocks.append(
            {"type": "actions", "block_id": block_id.get(s.status, "more"), "elements": buttons}
        )
    blocks.append(footer(s))
    return blocks


def reasons_text(snapshot: RequestSnapshot, limit: int = LONG_TEXT) -> str:
    """The policy's reasons (its authors' words), escaped and bounded."""
    lines: list[str] = []
    total = 0
    for index, reason in enumerate(snapshot.reasons):
        line = f"• {escape(reason[:500])}"
        if total + len(line) + 30 > limit:
            lines.append(f"… and {len(snapshot.reasons) - index} more")
            break
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) or EMPTY


NOTIFY_VALUE = 60  # an agent value in the notification text, as sent


def card_text(snapshot: RequestSnapshot) -> str:
    """Notification fallback text (shown in push notifications and screen readers).

    stepup's words come first — the status, the tier, the environment, the request id — and
    the agent's action and target last, each escaped and cut short, so no agent value can push
    the request's real target and environment out of the preview or pose as stepup's words."""
    s = snapshot
    return (
        f"{_TITLES[s.status]} — tier {s.tier.value}, {code(s.environment, NOTIFY_VALUE)} — "
        f"{code(s.id, 100)}: {code(s.action, NOTIFY_VALUE)} on {code(s.target, NOTIFY_VALUE)}"
    )
