"""How text reaches Slack: the one rule every stepup surface follows.

Everything an agent supplies (action, target, environment, justification, parameters,
on_behalf_of, its id, the outcome detail) and what approvers type (deny reasons) is untrusted.
It reaches Slack in one of three ways, never as live mrkdwn:

- a ``plain_text`` object (``plain``): no formatting, no mentions, no links, emoji off;
- an inline code span (``code``): escaped as Slack documents (``&``, ``<``, ``>``,
  https://api.slack.com/reference/surfaces/formatting#escaping), its backticks replaced by a
  look-alike (U+02CB MODIFIER LETTER GRAVE ACCENT) so it cannot close the span, on one line;
- a code block (``code_block``): escaped the same way, so a ``\u0060\u0060\u0060`` in a
  parameter value cannot close it.

mrkdwn objects are ``verbatim`` (Slack does not auto-link URLs or names in them) and every
message is posted with unfurling off. The only live markup is stepup's own: dates
(``when``) and the bold labels of its templates.

Long values are cut to fit Slack's documented limits with a visible "… (N more characters)";
``Shown`` remembers whether anything was cut, so the card can offer **Show all**.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

# Slack's documented limits (https://api.slack.com/reference/block-kit).
MESSAGE_TEXT = 40_000
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
TEXT_OBJECT = 3_000  # section text, context element, any text object
HEADER_TEXT = 150
FIELD_TEXT = 2_000
MAX_FIELDS = 10
CONTEXT_ELEMENTS = 10
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
ACTION_ID = 255
BLOCK_ID = 255
MODAL_TITLE = 24
MODAL_BUTTON = 24  # submit and close
PRIVATE_METADATA = 3_000
INPUT_LABEL = 2_000
INPUT_MAX_LENGTH = 3_000
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30

BACKTICK_LOOKALIKE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT
NEWLINE_MARK = "\u21b5"  # ↵ keeps a one-line code span on one line
NO_UNFURL: dict[str, Any] = {"unfurl_links": False, "unfurl_media": False}
EMPTY = "—"


def escape(text: str) -> str:
    """Slack's three control characters as the entities Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def more(count: int) -> str:
    return f"… ({count:,} more characters)"


def fit(text: str, limit: int, render: Callable[[str], str]) -> tuple[str, int]:
    """``render`` of the longest prefix of ``text`` that, with the "more" note, fits in
    ``limit`` characters; and how many characters were left out (0: all of it fits)."""
    whole = render(text)
    if len(whole) <= limit:
        return whole, 0
    low, high = 0, len(text)  # render is monotone in the prefix length
    while low < high:
        mid = (low + high + 1) // 2
        if len(render(text[:mid])) + 1 + len(more(len(text) - mid)) <= limit:
            low = mid
        else:
            high = mid - 1
    return render(text[:low]), len(text) - low


# Every character a client may break a line at: none may end a one-line code span early.
LINE_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Characters that reorder or hide what follows them (bidi controls, zero-width, BOM): shown
# as their code point, so a value reads as it is stored and cannot disguise stepup's words.
HIDDEN = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def reveal(text: str) -> str:
    """``text`` with its invisible and reordering characters shown as ``[U+XXXX]``."""
    return HIDDEN.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def _span_body(text: str) -> str:
    body = reveal(escape(text)).replace("`", BACKTICK_LOOKALIKE)
    return LINE_BREAKS.sub(NEWLINE_MARK, body)


def _span(text: str) -> str:
    return f"`{_span_body(text)}`"


def _block(text: str) -> str:
    return f"```\n{reveal(escape(text)).replace('`', BACKTICK_LOOKALIKE)}\n```"


class Shown:
    """Renders untrusted text for one message or view, remembering whether it cut any."""

    def __init__(self) -> None:
        self.cut = False

    def _fit(self, text: str, limit: int, render: Callable[[str], str], sep: str) -> str:
        shown, left = fit(text, limit, render)
        if not left:
            return shown
        self.cut = True
        return f"{shown}{sep}{more(left)}"

    def code(self, text: str | None, limit: int = 300) -> str:
        """An inline code span (and the "more" note after it when cut)."""
        if not text:
            return EMPTY
        return self._fit(text, limit, _span, " ")

    def code_block(self, text: str | None, limit: int) -> str:
        if not text:
            return EMPTY
        return self._fit(text, limit, _block, "\n")

    def plain(self, text: str | None, limit: int = TEXT_OBJECT) -> dict[str, Any]:
        """A ``plain_text`` object, emoji off (``:white_check_mark:`` stays words)."""
        return plain(self._fit(text, limit, reveal, " ") if text else EMPTY)


def code(text: str | None, limit: int = 300) -> str:
    """An inline code span for text that is never offered in full elsewhere (notes, DMs)."""
    return Shown().code(text, limit)


def code_block(text: str | None, limit: int) -> str:
    return Shown().code_block(text, limit)


def plain(text: str, *, emoji: bool = False) -> dict[str, Any]:
    """A ``plain_text`` object for text already within its limit (stepup's own words)."""
    return {"type": "plain_text", "text": text or EMPTY, "emoji": emoji}


def md(text: str) -> dict[str, Any]:
    """A ``mrkdwn`` object that Slack does not auto-link or auto-mention (``verbatim``)."""
    return {"type": "mrkdwn", "text": text or EMPTY, "verbatim": True}


def label(name: str, value: str) -> dict[str, Any]:
    """A section field: stepup's bold label, then an already-rendered value."""
    return md(f"*{name}*\n{value}")


def when(at: datetime | None) -> str:
    """A date token that each reader sees in their own time zone (stepup's own markup)."""
    if at is None:
        return EMPTY
    epoch = int(at.timestamp())
    fallback = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def person(name: str | None) -> str:
    """A workspace member's name (from Slack's directory), escaped."""
    return escape(name or "?")
