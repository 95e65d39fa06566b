"""The security channel's break-glass alert, with Acknowledge, Revoke and Show all.

Rendered from bounded fields first (who, what, the credential), so no input can make Slack
refuse it: every agent-written value is cut to fit, and **Show all** opens the whole request.
"""

from __future__ import annotations

from typing import Any

from bot.slack.cards import (
    BREAK_GLASS_ACK,
    CUT_WARNING,
    REVOKE,
    agent,
    button,
    footer,
    headline,
    long_sections,
    show_all_button,
    sponsor,
    when,
)
from bot.slack.markup import Shown, code, label, md, person, plain
from core.model import Status
from core.snapshots import RequestSnapshot


def break_glass_text(snapshot: RequestSnapshot) -> str:
    """The alert's notification text."""
    return f":rotating_light: Break-glass used: {headline(snapshot, Shown())}"


def break_glass_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    """The security channel's alert: who broke the glass, for what, and its review state."""
    s = snapshot
    shown = Shown()
    if s.break_glass_reviewed_at is not None:
        at = when(s.break_glass_reviewed_at)
        review = f":white_check_mark: Reviewed by {person(s.break_glass_reviewed_by)} at {at}"
    else:
        review = (
            ":warning: *Not reviewed yet* — flagged in the daily digest until someone reviews it"
        )
    credential = (
        f"credential {code(s.credential.jti)} until {when(s.credential.expires_at)}"
        if s.credential is not None
        else "credential not claimed yet"
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain(":rotating_light: Break-glass used", emoji=True)},
        {
            "type": "section",
            "text": md(headline(s, shown)),
            "fields": [
                label("Agent", agent(s, shown)),
                label("Sponsor", sponsor(s, shown)),
                label("Rule", code(s.rule or "—")),
                label("Status", f"{s.status.value}; {credential}"),
            ],
        },
        {"type": "context", "elements": [md(review)]},
        *long_sections(s, shown),
    ]
    buttons: list[dict[str, Any]] = []
    if s.break_glass_reviewed_at is None:
        buttons.append(button(BREAK_GLASS_ACK, s.id, "Acknowledge", "primary"))
    if s.status in (Status.APPROVED, Status.ACTIVE):
        buttons.append(button(REVOKE, s.id, "Revoke", "danger"))
    if shown.cut:
        blocks.append({"type": "context", "elements": [md(CUT_WARNING)]})
        buttons.append(show_all_button(s.id))
    if buttons:
        blocks.append({"type": "actions", "block_id": "break_glass", "elements": buttons})
    blocks.append(footer(s))
    return blocks
