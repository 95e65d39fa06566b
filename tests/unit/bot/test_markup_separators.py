"""A code span stays one line and a value cannot disguise what follows it: every character a
client may break a line at becomes ↵, and bidi/zero-width characters are shown as code points."""

from __future__ import annotations

import pytest

from bot.slack.markup import NEWLINE_MARK, Shown, code, code_block
from tests.slack_markup_check import check_mrkdwn, outside_code

BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
HIDDEN = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200b", "\u200d", "\u200e", "\u2060", "\ufeff"]


@pytest.mark.parametrize("sep", BREAKS, ids=[f"U+{ord(c[0]):04X}" for c in BREAKS])
def test_a_line_break_cannot_end_a_span(sep: str) -> None:
    text = f"logs.read{sep}*approved* _by_ ~alice~ Zq9MARK"
    span = code(text)
    assert sep not in span and NEWLINE_MARK in span
    assert outside_code(f"*Action* {span}").strip() == "*Action*"  # nothing of it outside
    check_mrkdwn(f"*Action* {span}", ("Zq9MARK",))


@pytest.mark.parametrize("char", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_reordering_and_invisible_characters_are_shown(char: str) -> None:
    value = f"prod{char}db"
    shown = f"[U+{ord(char):04X}]"
    assert char not in code(value) and shown in code(value)
    assert char not in code_block(value, 100) and shown in code_block(value, 100)
    plain = Shown().plain(value)["text"]
    assert char not in plain and shown in plain


def test_the_checker_sees_a_span_broken_by_a_line_separator() -> None:
    broken = "*Action* `logs\u2028*approved*`"
    assert "*approved*" in outside_code(broken)
