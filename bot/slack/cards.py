"""Block Kit for approval cards, thread notes and the App Home. Pure functions of a snapshot."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core.model import Status
from core.records import RequestSnapshot

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


def _field(label: str, value: str) -> dict[str, str]:
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
    line = f"{len(got)} of {snapshot.terms.quorum}"
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
                _field("Agent", f"`{s.agent_id}` (owner {s.owner_email})"),
                _field("Sponsor", s.on_behalf_of or "—"),
                _field("Action", f"`{s.action}` ({s.action_class.value})"),
                _field("Target", f"`{s.target}`"),
                _field("Environment", s.environment),
                _field("Tier", s.tier.value),
                _field("Rule", f"`{s.rule or '—'}`"),
                _field("Approvals", approvals_text(s)),
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


def deny_modal(request_id: str, channel: str | None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": json.dumps({"request_id": request_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason (shown to the agent and recorded)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 3,
                },
            }
        ],
    }


def confirm_modal(snapshot: RequestSnapshot, channel: str | None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": CONFIRM_MODAL,
        "private_metadata": json.dumps({"request_id": snapshot.id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Confirm approval"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"You are approving *{snapshot.action}* on *{snapshot.target}* "
                    f"({snapshot.environment}). Type the target's name to confirm.",
                },
            },
            {
                "type": "input",
                "block_id": CONFIRM_BLOCK,
                "label": {"type": "plain_text", "text": f"Type {snapshot.target}"},
                "element": {"type": "plain_text_input", "action_id": CONFIRM_INPUT},
            },
        ],
    }


def home_view(pending: list[RequestSnapshot], active: list[RequestSnapshot]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Waiting for your decision"}},
    ]
    if not pending:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "Nothing waits for you."}}
        )
    for snap in pending[:20]:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"*{snap.action}* on *{snap.target}* ({snap.environment}) — `{snap.id}`\n"
                        f"{approvals_text(snap)} · decide before {when(snap.expires_at)}"
                    ),
                },
            }
        )
    blocks.append(
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "Credentials you approved, still active"},
        }
    )
    if not active:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "None right now."}})
    for snap in active[:20]:
        until = snap.credential.expires_at if snap.credential else None
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"*{snap.action}* on *{snap.target}* by `{snap.agent_id}` — "
                        f"until {when(until)} — `{snap.id}`"
                    ),
                },
                "accessory": {
                    "type": "button",
                    "action_id": REVOKE,
                    "style": "danger",
                    "value": snap.id,
                    "text": {"type": "plain_text", "text": "Revoke"},
                },
            }
        )
    return {"type": "home", "blocks": blocks}


def break_glass_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    """The security channel's alert: who broke the glass, for what, and its review state."""
    s = snapshot
    if s.break_glass_reviewed_at is not None:
        at = when(s.break_glass_reviewed_at)
        review = f":white_check_mark: Reviewed by {s.break_glass_reviewed_by} at {at}"
    else:
        review = (
            ":warning: *Not reviewed yet* — flagged in the daily digest until someone reviews it"
        )
    credential = (
        f"credential `{s.credential.jti}` until {when(s.credential.expires_at)}"
        if s.credential is not None
        else "credential not claimed yet"
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": ":rotating_light: Break-glass used"},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{s.action}* on *{s.target}* ({s.environment})"},
            "fields": [
                _field("Agent", f"`{s.agent_id}` (owner {s.owner_email})"),
                _field("Sponsor", s.on_behalf_of or "—"),
                _field("Rule", f"`{s.rule or '—'}`"),
                _field("Status", f"{s.status.value}; {credential}"),
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Justification*\n{s.justification or '—'}"},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Parameters*\n{parameters_text(s)}"},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": review}]},
    ]
    buttons: list[dict[str, Any]] = []
    if s.break_glass_reviewed_at is None:
        buttons.append(
            {
                "type": "button",
                "action_id": BREAK_GLASS_ACK,
                "style": "primary",
                "value": s.id,
                "text": {"type": "plain_text", "text": "Acknowledge"},
            }
        )
    if s.status in (Status.APPROVED, Status.ACTIVE):
        buttons.append(
            {
                "type": "button",
                "action_id": REVOKE,
                "style": "danger",
                "value": s.id,
                "text": {"type": "plain_text", "text": "Revoke"},
            }
        )
    if buttons:
        blocks.append({"type": "actions", "block_id": "break_glass", "elements": buttons})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"`{s.id}` · {s.parameters_digest}"}],
        }
    )
    return blocks
