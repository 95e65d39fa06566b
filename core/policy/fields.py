"""Field types of the policy file: durations, sizes, clock times, ids, one-or-many lists.

Each parses at the edge into a value that cannot be wrong later, with an error that says
what was expected.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from core.durations import parse_duration, parse_size
from core.model import ActionClass
from core.names import canonical, check_pattern, fold

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _one_or_many(value: object) -> object:
    """A lone value stands for a one-item list; anything but a value or a list is refused."""
    if isinstance(value, str | ActionClass):
        return (value,)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("an empty list matches nothing: remove the key to match anything")
        return value
    raise ValueError(f"expected a string or a list of strings, got {_type_name(value)}")


def _duration(value: object) -> timedelta:
    if not isinstance(value, str | int):
        raise ValueError(f"expected a duration such as 30s, 10m or 2h, got {_type_name(value)}")
    return parse_duration(value)


def _size(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError(f"expected a size such as 500MB or 2GiB, got {_type_name(value)}")
    return parse_size(value)


def _time_of_day(value: object) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected a time of day as "HH:MM" (24h), got {value!r}')
    return time(int(match.group(1)), int(match.group(2)))


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
    return value


def _shaped(pattern: str, what: str) -> AfterValidator:
    """A pattern check whose error says what was expected, not the regular expression."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _lower(value: str) -> str:
    return value.lower()


def _canonical(value: object) -> object:
    """NFKC, then the safe set of ``core.names`` (other types are left to the type check)."""
    return canonical(value) if isinstance(value, str) else value


def _glob_pattern(value: str) -> str:
    return check_pattern(value, glob=True)


def _exact_name(value: str) -> str:
    return check_pattern(value, glob=False)


Text = Annotated[str, StringConstraints(strict=True, min_length=1)]
_NAME = _shaped(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", "a name (letters, digits, '-', '_', '.', ':')")
_ONE_OR_MANY = BeforeValidator(_one_or_many)
Name = Annotated[Text, StringConstraints(max_length=100), _NAME]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
TimeZoneName = Annotated[Text, AfterValidator(_timezone)]
# An approver group's id, where defined and where referred to: canonical (core/names.py),
# and then a plain name.
GroupId = Annotated[Text, BeforeValidator(_canonical), StringConstraints(max_length=100), _NAME]
# Match patterns and values: a character no canonical name holds could never match.
Globs = Annotated[tuple[Annotated[Text, AfterValidator(_glob_pattern)], ...], _ONE_OR_MANY]
Values = Annotated[tuple[Annotated[Text, AfterValidator(_exact_name)], ...], _ONE_OR_MANY]
Classes = Annotated[tuple[ActionClass, ...], _ONE_OR_MANY]
GroupNames = Annotated[tuple[GroupId, ...], _ONE_OR_MANY]
SlackUserId = Annotated[Text, _shaped(r"^[UW][A-Z0-9]{2,}$", "a Slack user id (U0ABC123)")]
SlackUsergroupId = Annotated[Text, _shaped(r"^S[A-Z0-9]{2,}$", "a Slack user group id (S0ABC)")]
SlackChannelId = Annotated[Text, _shaped(r"^[CG][A-Z0-9]{2,}$", "a Slack channel id (C0ABC123)")]
Email = Annotated[
    Text, _shaped(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "an email address"), AfterValidator(_lower)
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NotifyTarget = Literal["channel", "dm"]


def empty_mapping(value: object) -> object:
    """``approver_groups:`` with nothing under it reads as null in YAML: treat it as empty."""
    return {} if value is None else value


def distinct_groups(value: object) -> object:
    """``approver_groups``: empty when null, and no two ids that are one once canonical and
    folded (``sre`` in fullwidth letters and ``sre``, ``SRE`` and ``sre``): one would silently
    replace the other, or an approver list would name a group a reader mistakes for another."""
    value = empty_mapping(value)
    if not isinstance(value, dict):
        return value
    seen: dict[str, str] = {}
    for key in value:
        if not isinstance(key, str):
            continue
        same = fold(unicodedata.normalize("NFKC", key))
        if same in seen:
            raise ValueError(
                f"approver groups {seen[same]!a} and {key!a} are one name once "
                "normalised (Unicode NFKC, letter case ignored): rename one"
            )
        seen[same] = key
    return value


def empty_list(value: object) -> object:
    return [] if value is None else value
