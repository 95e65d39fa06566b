"""Block Kit for the daily digest: a header, then one section per figure.

Slack refuses a message over 50 blocks or a section text over 3,000 characters, so every list
is cut to fit and ends with "… and N more"; the whole digest stays in ``stepup digest --print``.
Every line names agents, targets and reasons that agents or people chose, so each item is an
inline code span (``bot.slack.markup``): escaped, and unable to mention, link or format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.slack.markup import FIELD_TEXT, HEADER_TEXT, code, code_block, escape, md, plain
from bot.slack.markup import MESSAGE_BLOCKS as MAX_BLOCKS
from bot.slack.markup import TEXT_OBJECT as SECTION_TEXT
from core.digest import (
    Digest,
    active_line,
    audit_line,
    break_glass_line,
    decision_line,
    denial_line,
    expired_line,
    minute_utc,
    refused_line,
    render_text,
    request_lines,
    revocation_line,
    top_line,
)

LINE_TEXT = 400  # one list item, as sent: a huge error text cannot eat the section

T = TypeVar("T")


def _item(line: str) -> str:
    return f"• {code(line, LINE_TEXT)}"


def bounded_list(title: str, lines: Sequence[str], *, limit: int = SECTION_TEXT) -> str:
    """``title`` and as many items as fit in ``limit`` characters, then "… and N more"."""
    if not lines:
        return f"{title}\nnone"
    items = [_item(line) for line in lines]
    whole = "\n".join([title, *items])
    if len(whole) <= limit:
        return whole
    text = title
    for index, item in enumerate(items):
        # Keep room for the "more" line that the items after this one would need.
        tail = f"\n… and {len(items) - index - 1} more"
        if len(text) + 1 + len(item) + len(tail) > limit:
            return f"{text}\n… and {len(items) - index} more"
        text = f"{text}\n{item}"
    return text


def _section(text: str) -> dict[str, Any]:
    if len(text) > SECTION_TEXT:
        text = text[: SECTION_TEXT - 1] + "…"
    return {"type": "section", "text": md(text)}


def _field(label: str, value: str) -> dict[str, object]:
    return md(f"*{label}*\n{code(value, FIELD_TEXT - len(label) - 10)}")


def _list_section(title: str, items: Sequence[T], line: Callable[[T], str]) -> dict[str, Any]:
    return _section(bounded_list(f"*{title}* ({len(items)})", [line(i) for i in items]))


def digest_blocks(digest: Digest) -> list[dict[str, Any]]:
    d = digest
    audit = d.audit
    mark = ":white_check_mark:" if audit.ok else ":rotating_light:"
    summary = "\n".join(
        [
            f"*Requests* ({d.total_requests})",
            *(f"• {escape(line)}" for line in request_lines(d)),
            f"*Time to decision*: {decision_line(d.decision_times)}",
        ]
    )
    refused = ", ".join(f"{why} {n}" for why, n in d.refused_by_kind.items())
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": plain("stepup daily digest"[:HEADER_TEXT]),
        },
        {
            "type": "context",
            "elements": [md(f"{minute_utc(d.window_start)} to {minute_utc(d.window_end)}")],
        },
        _section(f"{mark} *Audit chain*: {escape(audit_line(audit))}"),
        {"type": "divider"},
        _section(summary),
        _list_section("Expired", d.expired, expired_line),
        _list_section("Denials", d.denials, denial_line),
        _list_section(f"Refused clicks [{refused}]", d.refused_clicks, refused_line),
        _list_section("Break-glass uses", d.break_glass, break_glass_line),
        _list_section("Revocation failures", d.revocation_failures, revocation_line),
        _list_section("Active credentials now", d.active_credentials, active_line),
        {
            "type": "section",
            "fields": [
                _field("Top agents", top_line(d.top_agents)),
                _field("Top targets", top_line(d.top_targets)),
            ],
        },
    ]
    return blocks[:MAX_BLOCKS]


TEXT_LIST_LIMIT = 20  # items per list in the message's fallback text
TEXT_MAX = 39_000  # Slack refuses a message text over 40,000 characters


def digest_message(digest: Digest) -> tuple[str, str]:
    """The digest as a Slack message: fallback text within Slack's limit, and the blocks.

    The text's first line is stepup's own; the rest, which names agents and targets, is a code
    block it cannot close."""
    first, _, rest = render_text(digest, limit=TEXT_LIST_LIMIT).partition("\n")
    text = f"{escape(first)}\n{code_block(rest.rstrip(), TEXT_MAX - len(first) - 1)}"
    return text, json.dumps(digest_blocks(digest))
