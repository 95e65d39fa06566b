"""Block Kit for the daily digest: a header, then one section per figure.

Slack refuses a message over 50 blocks or a section text over 3,000 characters, so every list
is cut to fit and ends with "… and N more"; the whole digest stays in ``stepup digest --print``.
Every item starts with stepup's verdict (UNREVIEWED, its status, who reviewed, approved or
denied it, when, why), escaped and outside any code span; then the request id and each value
that an agent or a person wrote (agent, action, target, environment, reason, error) as its own
inline code span (``bot.slack.markup``), cut to its own budget: escaped, unable to mention, link
or format, and unable to push the verdict out of sight or imitate it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.slack.markup import (
    FIELD_TEXT,
    HEADER_TEXT,
    code,
    code_block,
    escape,
    fit,
    md,
    plain,
)
from bot.slack.markup import MESSAGE_BLOCKS as MAX_BLOCKS
from bot.slack.markup import TEXT_OBJECT as SECTION_TEXT
from core.audit.checkpoints import Checkpoint
from core.digest import (
    Digest,
    Item,
    active_item,
    audit_line,
    break_glass_item,
    decision_line,
    denial_item,
    expired_item,
    issuer_line,
    minute_utc,
    refused_item,
    render_text,
    request_lines,
    revocation_item,
    static_key_line,
)

# Budgets of one list item, as sent (escaping included): stepup's verdict, then each value.
VERDICT_TEXT = 500  # a long list of approvers' names is cut, the verdict's first words stay
ID_TEXT = 80
VALUE_TEXT = {"agent": 100, "action": 120, "target": 200, "environment": 80}
OTHER_VALUE = 300  # a reason, an error, a clicker
LINE_TEXT = 2 + VERDICT_TEXT + 3 + ID_TEXT + 3 + sum(VALUE_TEXT.values()) + 2 * (14 + OTHER_VALUE)
TOP_NAME = 120

T = TypeVar("T")


NAME_TEXT = 100  # a name in a verdict (a person, a policy rule)


def _verdict(parts: tuple[str, ...]) -> str:
    """stepup's words escaped, the people they name as code spans; cut after whole parts."""
    text = ""
    for index, part in enumerate(parts):
        shown = code(part, NAME_TEXT) if index % 2 else escape(part)
        if len(text) + len(shown) > VERDICT_TEXT - 2:
            if not text:  # the first words always show, cut if they must be
                return fit(part, VERDICT_TEXT - 2, escape)[0] + " …"
            return text + " …"
        text += shown
    return text


def _item(item: Item) -> str:
    """``• verdict — `id` — label `value`, label `value`…``: the verdict first, outside spans."""
    parts = [f"• {_verdict(item.verdict)}"]
    if item.request_id:
        parts.append(code(item.request_id, ID_TEXT))
    values = ", ".join(
        f"{name} {code(value, VALUE_TEXT.get(name, OTHER_VALUE))}" for name, value in item.values
    )
    if values:
        parts.append(values)
    return " — ".join(parts)


def bounded_list(title: str, lines: Sequence[Item], *, limit: int = SECTION_TEXT) -> str:
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


def _field(label: str, items: tuple[tuple[str, int], ...]) -> dict[str, object]:
    """The count first, then the name an agent chose as its own span."""
    lines = [f"{count} {code(name, TOP_NAME)}" for name, count in items] or ["—"]
    text = f"*{label}*"
    for line in lines:
        if len(text) + 1 + len(line) > FIELD_TEXT - 40:
            text += "\n…"
            break
        text += "\n" + line
    return md(text)


def _list_section(title: str, items: Sequence[T], line: Callable[[T], Item]) -> dict[str, Any]:
    return _section(bounded_list(f"*{title}* ({len(items)})", [line(i) for i in items]))


CHECKPOINT_TEXT = 2_000  # a checkpoint JWS is about 300 characters


def _checkpoint_text(checkpoint: Checkpoint | None) -> str:
    """The latest signed checkpoint, whole, as the command that checks the database still
    holds it: the channel keeps the chain's head outside the database."""
    if checkpoint is None:
        return "*Audit checkpoint*: none yet"
    return (
        f"*Audit checkpoint*: seq {checkpoint.seq}, signed {escape(minute_utc(checkpoint.at))}"
        " — keep it; to check the database still holds it: "
        f"{code(f'stepup audit verify --checkpoint {checkpoint.signed}', CHECKPOINT_TEXT)}"
    )


def _callbacks_text(count: int, latest: tuple[str, ...]) -> str:
    """Signed callbacks given up on in the window, with the latest requests' ids as spans."""
    if not count:
        return "*Signed callbacks*: none given up on"
    ids = ", ".join(code(request_id, ID_TEXT) for request_id in latest)
    return (
        f":warning: *Signed callbacks*: {count} given up on"
        + (f" (latest: {ids})" if ids else "")
        + " — `stepup requests show ID` gives the error"
    )


def digest_blocks(digest: Digest) -> list[dict[str, Any]]:
    d = digest
    audit = d.audit
    mark = ":white_check_mark:" if audit.healthy else ":rotating_light:"
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
        _section(_checkpoint_text(d.checkpoint)),
        {"type": "divider"},
        _section(summary),
        _list_section("Expired", d.expired, expired_item),
        _list_section("Denials", d.denials, denial_item),
        _list_section(f"Refused clicks [{refused}]", d.refused_clicks, refused_item),
        _list_section("Break-glass uses", d.break_glass, break_glass_item),
        _list_section("Revocation failures", d.revocation_failures, revocation_item),
        _section(f"*Live credentials by issuer*: {escape(issuer_line(d.live_by_issuer))}"),
        _list_section("Active credentials now", d.active_credentials, active_item),
        _section(
            (":warning: " if d.static_key_agents else "")
            + f"*Agent identity*: {static_key_line(d.static_key_agents)}"
        ),
        _section(_callbacks_text(d.callback_dead_letters, d.callback_dead_requests)),
        {
            "type": "section",
            "fields": [
                _field("Top agents", d.top_agents),
                _field("Top targets", d.top_targets),
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
