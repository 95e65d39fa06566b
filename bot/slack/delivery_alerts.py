"""What the bot says when Slack refuses a message or it keeps failing.

Three messages: the notice in the security channel that a message was given up on (naming the
request and Slack's error), and the minimal card and minimal break-glass alert posted in place
of a card or alert Slack refused, so the request can still be decided or the alert acknowledged
(their Show all button opens the whole request). All are built from bounded fields: stepup's
own words, the request id, Slack's error code, and the agent's short fields escaped and cut
(``markup``).
"""

from __future__ import annotations

from typing import Any

from bot.slack.cards import APPROVE, BREAK_GLASS_ACK, DENY, REVOKE, button, show_all_button
from bot.slack.markup import code, escape, md, plain
from core.model import Status
from core.snapshots import RequestSnapshot

KIND_WORDS = {
    "card.post": "the approval card",
    "card.refresh": "an update of the approval card",
    "thread.note": "a note in the card's thread",
    "direct": "the sponsor's direct message",
    "channel": "a channel message",
    "alert.break_glass": "the break-glass alert",
    "alert.delivery_failed": "a delivery-failure notice",
}
ERROR_LIMIT = 300  # Slack's error codes are short; what stepup adds to them is short too
FIELD_LIMIT = 300


def dead_letter_text(report: dict[str, Any], snapshot: RequestSnapshot | None) -> str:
    """Notification text of the security-channel notice (escaped, no live markup)."""
    what = KIND_WORDS.get(str(report.get("kind")), "a message")
    request_id = report.get("request_id")
    request = f" for request {_id(request_id)}" if request_id else ""
    subject = f" ({_subject(snapshot)})" if snapshot is not None else ""
    error = escape(str(report.get("error", "?"))[:ERROR_LIMIT])
    return f"Slack delivery failed: {what}{request}{subject} was given up on: {error}"


def dead_letter_blocks(
    report: dict[str, Any], snapshot: RequestSnapshot | None
) -> list[dict[str, Any]]:
    what = KIND_WORDS.get(str(report.get("kind")), "a message")
    request_id = report.get("request_id")
    lines = [
        f"*Message* {what}",
        f"*Request* {code(str(request_id)) if request_id else 'none (not tied to a request)'}",
        f"*Error* {code(str(report.get('error', '?')), ERROR_LIMIT)}",
        f"*Attempts* {int(report.get('attempts') or 0)}",
    ]
    if snapshot is not None:
        lines.insert(2, f"*Asked* {_subject(snapshot)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain("Slack delivery failed: not retried")},
        {"type": "section", "text": md("\n".join(lines))},
    ]
    if request_id:
        blocks.append(
            {
                "type": "context",
                "elements": [md(f"Every delivery of it: `stepup requests show {_id(request_id)}`")],
            }
        )
    return blocks


def minimal_card_text(snapshot: RequestSnapshot) -> str:
    return f"Approval request {_id(snapshot.id)} ({snapshot.status.value}): {_subject(snapshot)}"


def minimal_card_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    """The card cut to what a decision needs: plain text, the request id, Approve/Deny, and
    Show all for the justification and parameters it leaves out."""
    s = snapshot
    buttons: list[dict[str, Any]] = []
    if s.status is Status.PENDING:
        buttons += [
            button(APPROVE, s.id, "Approve", "primary"),
            button(DENY, s.id, "Deny", "danger"),
        ]
    buttons.append(show_all_button(s.id))
    return [
        {
            "type": "section",
            "text": plain(
                f"Approval request {s.id[:100]}: {s.status.value}. Slack refused the full card. "
                "Press Show all and read the whole request before you decide."
            ),
        },
        _fields(s),
        {"type": "actions", "block_id": "decision", "elements": buttons},
    ]


def minimal_break_glass_text(snapshot: RequestSnapshot) -> str:
    return f"Break-glass used: request {_id(snapshot.id)} ({_subject(snapshot)})"


def minimal_break_glass_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    """The break-glass alert cut to plain words, the request id, Acknowledge, Revoke and
    Show all: what the security channel needs to act on it."""
    s = snapshot
    reviewed = (
        "It has been reviewed."
        if s.break_glass_reviewed_at is not None
        else "Not reviewed yet: acknowledge it once you have."
    )
    buttons: list[dict[str, Any]] = []
    if s.break_glass_reviewed_at is None:
        buttons.append(button(BREAK_GLASS_ACK, s.id, "Acknowledge", "primary"))
    if s.status in (Status.APPROVED, Status.ACTIVE):
        buttons.append(button(REVOKE, s.id, "Revoke", "danger"))
    buttons.append(show_all_button(s.id))
    return [
        {
            "type": "section",
            "text": plain(
                f"Break-glass used: request {s.id[:100]} was granted without approval "
                f"({s.status.value}). {reviewed} Slack refused the full alert; press Show all "
                "to read the whole request."
            ),
        },
        _fields(s),
        {"type": "actions", "block_id": "break_glass", "elements": buttons},
    ]


def _fields(s: RequestSnapshot) -> dict[str, Any]:
    return {
        "type": "section",
        "text": md(
            f"*Agent* {code(s.agent_id, FIELD_LIMIT)}\n"
            f"*Action* {code(s.action, FIELD_LIMIT)} ({s.action_class.value})\n"
            f"*Target* {code(s.target, FIELD_LIMIT)}\n"
            f"*Environment* {code(s.environment, FIELD_LIMIT)}"
        ),
    }


def _subject(snapshot: RequestSnapshot) -> str:
    """Action on target (environment), escaped and cut: the request in a few words."""
    return (
        f"{code(snapshot.action, FIELD_LIMIT)} on {code(snapshot.target, FIELD_LIMIT)} "
        f"({code(snapshot.environment, 100)})"
    )


def _id(request_id: object) -> str:
    return escape(str(request_id)[:100])
