"""The security channel's break-glass alert, with Acknowledge and Revoke."""

from __future__ import annotations

from typing import Any

from bot.slack.cards import (
    BREAK_GLASS_ACK,
    REVOKE,
    field,
    parameters_text,
    when,
)
from core.model import Status
from core.snapshots import RequestSnapshot


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
                field("Agent", f"`{s.agent_id}` (owner {s.owner_email})"),
                field("Sponsor", s.on_behalf_of or "—"),
                field("Rule", f"`{s.rule or '—'}`"),
                field("Status", f"{s.status.value}; {credential}"),
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
