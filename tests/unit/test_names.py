"""core.names: one canonical form for the names policy decides on."""

from __future__ import annotations

import pytest

from core.names import canonical, check_pattern, describe, fold

SAFE = "AZaz09._-:/@+="


@pytest.mark.parametrize(
    "name",
    ["payments-db", "db.drop_database", "vault:kv/prod/db", "ops@example.com", "a+b=c", SAFE],
)
def test_safe_ascii_names_are_kept_as_sent(name: str) -> None:
    assert canonical(name) is name  # the ASCII fast path: no copy, no normalisation


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("\uff50\uff41\uff59\uff4d\uff45\uff4e\uff54\uff53-db", "payments-db"),  # fullwidth
        ("\uff30AYMENTS", "PAYMENTS"),  # letter case as sent
        ("\ufb01le", "file"),  # a ligature
        ("\u212a8s", "K8s"),  # KELVIN SIGN
        ("x\u2024y", "x.y"),  # ONE DOT LEADER
        ("\u2460", "1"),  # CIRCLED DIGIT ONE
    ],
)
def test_compatibility_forms_become_their_nfkc_form(sent: str, kept: str) -> None:
    assert canonical(sent) == kept


@pytest.mark.parametrize(
    ("sent", "named", "position", "normalised"),
    [
        ("p\u0430yments", "U+0430 (CYRILLIC SMALL LETTER A)", 2, False),
        ("pay\u200bments", "invisible format character U+200B (ZERO WIDTH SPACE)", 4, False),
        (" payments", "space U+0020", 1, False),
        ("payments ", "space U+0020", 9, False),
        ("payments\u00a0db", "space U+0020", 9, True),  # a no-break space becomes a space
        ("payments\u2011db", "U+2010 (HYPHEN)", 9, True),  # U+2011 becomes U+2010
        ("x\x1b[2J", "control character U+001B", 2, False),
        ("a\u202eb", "invisible format character U+202E (RIGHT-TO-LEFT OVERRIDE)", 2, False),
        ("e\u0301", "U+00E9 (LATIN SMALL LETTER E WITH ACUTE)", 1, True),  # composed
        ("a*b", "U+002A (ASTERISK)", 2, False),
        ("a\\b", "U+005C (REVERSE SOLIDUS)", 2, False),
        ("caf\u00e9", "U+00E9 (LATIN SMALL LETTER E WITH ACUTE)", 4, False),
    ],
)
def test_anything_else_is_refused_naming_the_character_and_its_position(
    sent: str, named: str, position: int, normalised: bool
) -> None:
    with pytest.raises(ValueError, match="names use only") as caught:
        canonical(sent)
    message = str(caught.value)
    assert f"{named} at position {position}" in message, message
    assert ("(after Unicode NFKC normalisation)" in message) is normalised


def test_the_message_never_contains_the_character_itself() -> None:
    with pytest.raises(ValueError) as caught:
        canonical("ok\u202egnp.exe")
    assert "\u202e" not in str(caught.value)


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        canonical("")


def test_fold_ignores_letter_case_only() -> None:
    assert fold("Payments-DB") == fold("payments-db") == "payments-db"
    assert fold("payments-db") != fold("payments_db")


def test_patterns_may_hold_glob_characters_values_may_not() -> None:
    assert check_pattern("payments-[!a-c]*?", glob=True) == "payments-[!a-c]*?"
    with pytest.raises(ValueError, match=r"U\+002A \(ASTERISK\) at position 5 can never match"):
        check_pattern("prod*", glob=False)


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("p\u0430yments-*", "U+0430"),
        ("\uff50ayments-*", "U+FF50"),  # a pattern is not normalised: it says what it matches
        ("payments *", "space U+0020"),
        ("payments\u200b*", "U+200B"),
        ("payments{a,b}", "U+007B"),
    ],
)
def test_a_pattern_no_name_can_match_is_refused(pattern: str, named: str) -> None:
    with pytest.raises(ValueError, match="can never match") as caught:
        check_pattern(pattern, glob=True)
    assert named in str(caught.value)


def test_describe() -> None:
    assert describe("\t") == "control character U+0009"
    assert describe("\u3000") == "space U+3000"
    assert describe("\U0001f600") == "character U+1F600 (GRINNING FACE)"
    assert describe("\ue000") == "character U+E000"  # a private-use character has no name
