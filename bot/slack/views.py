"""Modals (deny with a reason, typed confirmation, the whole request) and the App Home tab.

Agent text reaches them as ``bot.slack.markup`` renders it: plain_text, or code spans it
cannot close. The whole-request modal shows every agent-written value exactly, in plain_text
sections of at most 3,000 characters, on pages of at most 100 blocks.
"""

from __future__ import annotations

import json
from typing import Any

from bot.slack.cards import (
    CONFIRM_BLOCK,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    DENY_MODAL,
    FULL_VIEW,
    NOT_VERIFIED,
    REASON_BLOCK,
    REASON_INPUT,
    REVOKE,
    SHOW_PAGE,
    approvals_text,
    button,
    headline,
    parameters_json,
    sponsor_mark,
    when,
)
from bot.slack.markup import (
    TEXT_OBJECT,
    VIEW_BLOCKS,
    Shown,
    code,
    md,
    plain,
)
from core.snapshots import RequestSnapshot

REASON_MAX = 2_000  # a deny reason, as typed (Slack allows up to 3,000)
HOME_ITEMS = 20
# One App Home item's section text, as sent (escaping included). Each part is bounded:
HOME_HEADLINE = {"action": 600, "target": 1_100, "environment": 400}
HOME_ID = 100  # the request id's code span (stepup's ids are short)
HOME_AGENT = 300
DATE = 100  # a ``when`` token: ``<!date^…|YYYY-MM-DD HH:MM:SS UTC>``, about 80
HOME_SPONSOR = 400
HOME_APPROVALS = 600
# The section of a pending item: headline, " — ", id, "\ndecide before ", date; of an active
# item: headline, " by ", agent, " — until ", date, " — ", id. The sponsor and the approvals
# of a pending item are a context block of their own. Both stay within Slack's 3,000.
HOME_HEADLINE_MAX = sum(HOME_HEADLINE.values()) + len(" on  in ")
HOME_PENDING_MAX = HOME_HEADLINE_MAX + len(" — ") + HOME_ID + len("\ndecide before ") + DATE
HOME_ACTIVE_MAX = (
    HOME_HEADLINE_MAX + len(" by ") + HOME_AGENT + len(" — until ") + DATE + len(" — ") + HOME_ID
)
HOME_CONTEXT_MAX = len("Sponsor  ") + HOME_SPONSOR + len(NOT_VERIFIED) + len(" · ") + HOME_APPROVALS
PAGE_BLOCKS = VIEW_BLOCKS - 2  # room for the page line and its buttons


def _meta(**values: object) -> str:
    return json.dumps(values)


def deny_modal(request_id: str, channel: str | None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": _meta(request_id=request_id, channel=channel),
        "title": plain("Deny request"),
        "submit": plain("Deny"),
        "close": plain("Cancel"),
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": plain("Reason (shown to the agent and recorded)"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 3,
                    "max_length": REASON_MAX,
                },
            }
        ],
    }


def confirm_modal(snapshot: RequestSnapshot, channel: str | None) -> dict[str, Any]:
    shown = Shown()
    return {
        "type": "modal",
        "callback_id": CONFIRM_MODAL,
        "private_metadata": _meta(request_id=snapshot.id, channel=channel),
        "title": plain("Confirm approval"),
        "submit": plain("Approve"),
        "close": plain("Cancel"),
        "blocks": [
            {
                "type": "section",
                "text": md(f"You are approving {headline(snapshot, shown)}."),
            },
            {"type": "section", "text": md("Type the target's name, exactly as written here:")},
            {"type": "section", "text": shown.plain(snapshot.target)},
            {
                "type": "input",
                "block_id": CONFIRM_BLOCK,
                "label": plain("The target's name"),
                "element": {"type": "plain_text_input", "action_id": CONFIRM_INPUT},
            },
        ],
    }


def _chunks(text: str, size: int = TEXT_OBJECT) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or ["—"]


def full_request_blocks(snapshot: RequestSnapshot) -> list[dict[str, Any]]:
    """Every value the agent sent, exactly as sent, labelled; as many blocks as it takes."""
    s = snapshot
    values: list[tuple[str, str]] = [
        ("Agent", s.agent_id),
        ("Owner", s.owner_email),
        (f"Sponsor {sponsor_mark(s)}", s.on_behalf_of or "—"),
        ("Action", f"{s.action} ({s.action_class.value})"),
        ("Target", s.target),
        ("Environment", s.environment),
        ("Justification", s.justification or "—"),
        ("Parameters (JSON)", parameters_json(s)),
        ("Parameters digest (the credential binds it)", s.parameters_digest),
    ]
    if s.status_reason:
        values.append(("Reason", s.status_reason))
    if s.outcome:
        values.append(("Outcome", f"{s.outcome}: {s.outcome_detail or ''}"))
    blocks: list[dict[str, Any]] = []
    for name, value in values:
        blocks.append({"type": "section", "text": md(f"*{name}*")})
        blocks.extend({"type": "section", "text": plain(chunk)} for chunk in _chunks(value))
    return blocks


def full_request_view(snapshot: RequestSnapshot, page: int = 0) -> dict[str, Any]:
    """The whole request in a modal, one page of at most ``VIEW_BLOCKS`` blocks at a time."""
    everything = full_request_blocks(snapshot)
    pages = max(1, -(-len(everything) // PAGE_BLOCKS))
    page = min(max(page, 0), pages - 1)
    blocks = everything[page * PAGE_BLOCKS : (page + 1) * PAGE_BLOCKS]
    if pages > 1:
        buttons = []
        if page > 0:
            buttons.append(button(SHOW_PAGE, f"{snapshot.id} {page - 1}", "Previous page"))
        if page < pages - 1:
            buttons.append(button(SHOW_PAGE, f"{snapshot.id} {page + 1}", "Next page"))
        blocks.append({"type": "context", "elements": [md(f"Page {page + 1} of {pages}")]})
        blocks.append({"type": "actions", "block_id": "pages", "elements": buttons})
    return {
        "type": "modal",
        "callback_id": FULL_VIEW,
        "private_metadata": _meta(request_id=snapshot.id, page=page),
        "title": plain("The request in full"),
        "close": plain("Close"),
        "blocks": blocks,
    }


def home_view(pending: list[RequestSnapshot], active: list[RequestSnapshot]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain("Waiting for your decision")},
    ]
    if not pending:
        blocks.append({"type": "section", "text": md("Nothing waits for you.")})
    for snap in pending[:HOME_ITEMS]:
        shown = Shown()
        sponsor = (
            f"Sponsor {shown.code(snap.on_behalf_of, HOME_SPONSOR)} {sponsor_mark(snap)} · "
            if snap.on_behalf_of
            else ""
        )
        blocks.append(
            {
                "type": "section",
                "text": md(
                    f"{headline(snap, shown, HOME_HEADLINE)} — {code(snap.id, HOME_ID)}\n"
                    f"decide before {when(snap.expires_at)}"
                ),
            }
        )
        blocks.append(
            {
                "type": "context",
                "elements": [md(f"{sponsor}{approvals_text(snap, HOME_APPROVALS)}")],
            }
        )
    blocks.append(
        {"type": "header", "text": plain("Credentials you approved, still active")},
    )
    if not active:
        blocks.append({"type": "section", "text": md("None right now.")})
    for snap in active[:HOME_ITEMS]:
        until = snap.credential.expires_at if snap.credential else None
        shown = Shown()
        blocks.append(
            {
                "type": "section",
                "text": md(
                    f"{headline(snap, shown, HOME_HEADLINE)} by "
                    f"{shown.code(snap.agent_id, HOME_AGENT)} — "
                    f"until {when(until)} — {code(snap.id, HOME_ID)}"
                ),
                "accessory": button(REVOKE, snap.id, "Revoke", "danger"),
            }
        )
    return {"type": "home", "blocks": blocks}
