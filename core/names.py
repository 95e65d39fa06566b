"""One canonical form for the names policy decides on: action, target, environment, agent ids
and approver group ids.

A name is Unicode NFKC-normalised (fullwidth letters become ASCII ones), then accepted only if
every character is in a small safe set: ASCII letters, digits and ``. _ - : / @ + =``. What a
look-alike needs (another script's letter, an invisible or spacing character, another
hyphen) is outside it, so a name cannot pass for another. Letter case is kept as sent; the
policy compares names without regard to it (``fold``), so no variant of a name gets a weaker
decision than the name itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

SAFE_CHARACTERS = "ASCII letters, digits and . _ - : / @ + ="
GLOB_CHARACTERS = "*?[]!"
_SAFE = re.compile(r"[A-Za-z0-9._\-:/@+=]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-:/@+=]")
_UNSAFE_IN_GLOB = re.compile(r"[^A-Za-z0-9._\-:/@+=*?\[\]!]")


def canonical(value: str) -> str:
    """``value`` in NFKC form, or ValueError naming the first character outside the safe set
    (as U+XXXX with its position, counted from 1)."""
    if value.isascii() and _SAFE.fullmatch(value):
        return value  # ASCII is already NFKC: the common case costs one regex
    normal = value if value.isascii() else unicodedata.normalize("NFKC", value)
    if not normal:
        raise ValueError("must not be empty")
    found = _UNSAFE.search(normal)
    if found is not None:
        after = " (after Unicode NFKC normalisation)" if normal != value else ""
        raise ValueError(
            f"{describe(found.group())} at position {found.start() + 1}{after} is not allowed: "
            f"names use only {SAFE_CHARACTERS}"
        )
    return normal


def check_pattern(pattern: str, *, glob: bool) -> str:
    """A policy's match pattern (``glob``) or exact value: refused, with ValueError, if it holds
    a character no canonical name can contain, so the rule could never match it."""
    unsafe = _UNSAFE_IN_GLOB if glob else _UNSAFE
    found = unsafe.search(pattern)
    if found is not None:
        allowed = SAFE_CHARACTERS + (f" and the glob characters {GLOB_CHARACTERS}" if glob else "")
        raise ValueError(
            f"{describe(found.group())} at position {found.start() + 1} can never match: "
            f"names use only {allowed}"
        )
    return pattern


# The form policy compares: letter case ignored. ``str.lower`` itself, not a wrapper: it runs
# on every evaluation, and names are ASCII, where lowering is cheap.
fold: Callable[[str], str] = str.lower


def describe(char: str) -> str:
    """``space U+0020``, ``control character U+001B``, ``U+0430 (CYRILLIC SMALL LETTER A)``:
    never the character itself, which may be invisible or reorder the text around it."""
    code = f"U+{ord(char):04X}"
    category = unicodedata.category(char)
    if category == "Cc":
        return f"control character {code}"
    if category == "Zs":
        return f"space {code}"
    name = unicodedata.name(char, "")
    kind = "invisible format character " if category == "Cf" else "character "
    return f"{kind}{code}" + (f" ({name})" if name else "")
