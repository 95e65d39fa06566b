"""What the bot says when Slack refuses a message or it keeps failing.

Two messages: the notice in the security channel that a message was given up on (naming the
request and Slack's error), and the minimal card posted in place of a card Slack refused, so
the request can still be decided. Both are built from bounded fields: stepup's own words, the
request id, Slack's error code, and the agent's short fields escaped and cut (``markup``).
"""

from __future__ import annotations

from typing import Any

from bot.slack.cards import APPROVE, DENY
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
    """The card cut to what a decision needs: plain text, the request id, Approve/Deny."""
    s = snapshot
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": plain(
                f"Approval request {s.id[:100]}: {s.status.value}. Slack refused the full card; "
                f"read the request in full (stepup requests show {s.id[:100]}) before deciding."
            ),
        },
        {
            "type": "section",
            "text": md(
                f"*Agent* {code(s.agent_id, FIELD_LIMIT)}\n"
                f"*Action* {code(s.action, FIELD_LIMIT)} ({s.action_class.value})\n"
                f"*Target* {code(s.target, FIELD_LIMIT)}\n"
                f"*Environment* {code(s.environment, FIELD_LIMIT)}"
            ),
        },
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
                        "text": plain("Approve"),
                    },
                    {
                        "type": "button",
                        "action_id": DENY,
                        "style": "danger",
                        "value": s.id,
                        "text": plain("Deny"),
                    },
                ],
            }
        )
    return blocks


def _subject(snapshot: RequestSnapshot) -> str:
    """Action on target (environment), escaped and cut: the request in a few words."""
    return (
        f"{code(snapshot.action, FIELD_LIMIT)} on {code(snapshot.target, FIELD_LIMIT)} "
        f"({code(snapshot.environment, 100)})"
    )


def _id(request_id: object) -> str:
    return escape(str(request_id)[:100])
