"""Checks that what stepup sends to Slack carries agent text only where it is inert.

Used by the property test over every renderer and by the attack tests over real HTTP: every
``<…>`` in mrkdwn is one of stepup's own date tokens; agent text (found by a marker) appears in
mrkdwn only inside a code span or block that Slack would close where stepup closed it, and in
plain_text only with emoji off; everything fits Slack's limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

DATE_TOKEN = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[0-9: UTC-]+>")
# A span ends at a backtick or at anything a client may break a line at.
CODE = re.compile("```.*?```|`[^`\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]*`", re.DOTALL)


def text_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every text object (``{"type": "mrkdwn"|"plain_text", "text": …}``) in a payload."""
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            yield node
        for value in node.values():
            yield from text_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from text_objects(value)


def outside_code(mrkdwn: str) -> str:
    """``mrkdwn`` with stepup's date tokens and every closed code span or block removed."""
    return CODE.sub(" ", DATE_TOKEN.sub(" ", mrkdwn))


def check_mrkdwn(text: str, markers: tuple[str, ...] = ()) -> None:
    assert "<" not in DATE_TOKEN.sub("", text), f"live <…> markup: {text!r}"
    assert ">" not in DATE_TOKEN.sub("", text), f"a live > quote or markup: {text!r}"
    bare = re.search(r"&(?!amp;|lt;|gt;)", DATE_TOKEN.sub("", text))
    assert bare is None, f"an unescaped &: {text!r}"
    rest = outside_code(text)
    for marker in markers:
        assert marker not in rest, f"agent text outside a code span: {text!r}"
    for span in CODE.findall(DATE_TOKEN.sub("", text)):
        body = span.strip("`")
        assert "`" not in body, f"a code span an agent could close: {span!r}"


def check_payload(payload: Any, markers: tuple[str, ...] = ()) -> None:
    """Every mrkdwn string (and message text) of a Block Kit payload, and its plain_text."""
    for obj in text_objects(payload):
        if obj["type"] == "mrkdwn":
            assert obj.get("verbatim") is True, f"auto-linking mrkdwn: {obj!r}"
            check_mrkdwn(obj["text"], markers)
        elif any(m in obj["text"] for m in markers):
            assert obj.get("emoji") is False, f"agent text with emoji on: {obj!r}"


# stepup's verdict words: never inside a code span, where agent text could come before them.
VERDICT_WORDS = (
    "UNREVIEWED",
    "reviewed by",
    "approved by",
    "denied by",
    "now active",
    "now completed",
    "active until",
    "nobody decided",
    "never claimed",
    "failed revocation",
    "Approval needed",
    "decide before",
)


def check_verdicts_outside_spans(text: str, verdicts: tuple[str, ...] = VERDICT_WORDS) -> None:
    """No inline code span holds one of stepup's verdict words (agent text must not precede
    them). A code block (the digest's fallback text) holds whole lines, each verdict first."""
    for span in CODE.findall(DATE_TOKEN.sub("", text)):
        if span.startswith("```"):
            continue
        for word in verdicts:
            assert word not in span, f"verdict {word!r} inside a code span: {span!r}"


def check_verdicts_first(payload: Any, verdicts: tuple[str, ...] = VERDICT_WORDS) -> None:
    """Every mrkdwn text of ``payload``: its verdict words are outside code spans."""
    for obj in text_objects(payload):
        if obj["type"] == "mrkdwn":
            check_verdicts_outside_spans(obj["text"], verdicts)
