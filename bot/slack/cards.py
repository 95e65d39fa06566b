"""Block Kit for approval cards, thread notes and the App Home. Pure functions of a snapshot."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core.approvals import tally
from core.model import Status
from core.snapshots import RequestSnapshot

APPROVE = "stepup_approve"
DENY = "stepup_deny"
REVOKE = "stepup_revoke"
BREAK_GLASS_ACK = "stepup_break_glass_ack"
DENY_MODAL = "stepup_deny_modal"
CONFIRM_MODAL = "stepup_confirm_modal"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
CONFIRM_BLOCK = "confirm"
CONFIRM_INPUT = "confirm_input"
MAX_INLINE_PARAMETERS = 600

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


def when(at: datetime | None) -> str:
    if at is None:
        return "—"
    epoch = int(at.timestamp())
    fallback = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value}"}


def parameters_text(snapshot: RequestSnapshot) -> str:
    text = json.dumps(snapshot.parameters, indent=1, sort_keys=True, ensure_ascii=False)
    if len(text) > MAX_INLINE_PARAMETERS:
        return (
            f"`{snapshot.parameters_digest}` (too long to show; the credential binds this digest)"
        )
    return f"```{text}```"


def approvals_text(snapshot: RequestSnapshot) -> str:
    got = snapshot.approvals
    count = tally(snapshot.votes, snapshot.terms.quorum)
    line = f"{count.received} of {count.required}"
    if got:
        line += ": " + ", ".join(
            f"{v.name or v.email or v.slack_user_id} ({when(v.at)})" for v in got
        )
    return line


def outcome_text(snapshot: RequestSnapshot) -> str:
    status = snapshot.status
    if status is Status.PENDING:
        return f"Decide before {when(snapshot.expires_at)}"
    if status is Status.DENIED:
        deniers = [v for v in snapshot.votes if v.vote == "deny"]
        by = deniers[0].name or deniers[0].email if deniers else "policy"
        return f"Denied by {by} at {when(snapshot.decided_at)}: {snapshot.status_reason or ''}"
    if status is Status.APPROVED:
        return f"Decided at {when(snapshot.decided_at)}; claim before {when(snapshot.expires_at)}"
    if status is Status.ACTIVE and snapshot.credential is not None:
        until = when(snapshot.credential.expires_at)
        return f"Credential `{snapshot.credential.jti}` active until {until}"
    if status is Status.COMPLETED:
        detail = f" — {snapshot.outcome_detail}" if snapshot.outcome_detail else ""
        at = when(snapshot.updated_at)
        return f"Completed at {at}: *{snapshot.outcome}*{detail}. Credential revoked."
    if status is Status.EXPIRED:
        return f"Expired at {when(snapshot.updated_at)} — {snapshot.status_reason or 'no decision'}"
    at = when(snapshot.updated_at)
    return f"{status.value.capitalize()} at {at}: {snapshot.status_reason or ''}"


def card_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    s = snapshot
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _TITLES[s.status]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{s.action}* on *{s.target}* ({s.environment})"},
            "fields": [
                field("Agent", f"`{s.agent_id}` (owner {s.owner_email})"),
                field("Sponsor", s.on_behalf_of or "—"),
                field("Action", f"`{s.action}` ({s.action_class.value})"),
                field("Target", f"`{s.target}`"),
                field("Environment", s.environment),
                field("Tier", s.tier.value),
                field("Rule", f"`{s.rule or '—'}`"),
                field("Approvals", approvals_text(s)),
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Justification*\n{s.justification or '—'}"},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Why*\n" + "\n".join(f"• {r}" for r in s.reasons)},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Parameters*\n{parameters_text(s)}"},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome_text(s)}]},
    ]
    if s.status is Status.PENDING:
        blocks.append(
            {
                "type": "actions",
                "block_id": "decision",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE,
                        "style": "primary",
                        "value": s.id,
                        "text": {"type": "plain_text", "text": "Approve"},
                    },
                    {
                        "type": "button",
                        "action_id": DENY,
                        "style": "danger",
                        "value": s.id,
                        "text": {"type": "plain_text", "text": "Deny"},
                    },
                ],
            }
        )
    elif s.status in (Status.APPROVED, Status.ACTIVE):
        blocks.append(
            {
                "type": "actions",
                "block_id": "revoke",
                "elements": [
                    {
                        "type": "button",
                        "action_id": REVOKE,
                        "style": "danger",
                        "value": s.id,
                        "text": {"type": "plain_text", "text": "Revoke"},
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Revoke now?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": "The agent's credential stops working at once.",
                            },
                            "confirm": {"type": "plain_text", "text": "Revoke"},
                            "deny": {"type": "plain_text", "text": "Keep"},
                        },
                    },
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"`{s.id}` · {s.parameters_digest}"}],
        }
    )
    return blocks


def card_text(snapshot: RequestSnapshot) -> str:
    """Notification fallback text (shown in push notifications and screen readers)."""
    s = snapshot
    return f"{_TITLES[s.status]}: {s.action} on {s.target} ({s.environment})"
