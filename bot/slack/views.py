"""Modals (deny with a reason, typed confirmation) and the App Home tab."""

from __future__ import annotations

import json
from typing import Any

from bot.slack.cards import (
    CONFIRM_BLOCK,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    DENY_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    REVOKE,
    approvals_text,
    when,
)
from core.snapshots import RequestSnapshot


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
