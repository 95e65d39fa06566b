"""Compiled match conditions. Each answers ``holds`` fast and, for ``explain``, says why not."""

from __future__ import annotations

import fnmatch
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime, time
from zoneinfo import ZoneInfo

from core.model import Intent

_WILDCARD = re.compile(r"[*?\[]")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class GlobSet:
    """fnmatch-style patterns, case-sensitive. Literal patterns are compared by equality and the
    rest share one compiled regex, so a list of globs costs one set lookup and one match."""

    __slots__ = ("_literals", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._literals = frozenset(p for p in self.patterns if not _WILDCARD.search(p))
        wild = [p for p in self.patterns if p not in self._literals]
        self._regex: Callable[[str], re.Match[str] | None] | None = (
            re.compile("|".join(fnmatch.translate(p) for p in wild)).match if wild else None
        )

    def matches(self, value: str) -> bool:
        if value in self._literals:
            return True
        return self._regex is not None and self._regex(value) is not None

    def describe(self) -> str:
        if len(self.patterns) == 1:
            return repr(self.patterns[0])
        return "any of [" + ", ".join(self.patterns) + "]"


class Condition(ABC):
    """One key of a rule's ``match``. ``failure`` is only asked when ``holds`` is false."""

    __slots__ = ()

    @abstractmethod
    def holds(self, intent: Intent, now: datetime) -> bool: ...

    @abstractmethod
    def failure(self, intent: Intent, now: datetime) -> str: ...


class GlobCondition(Condition):
    __slots__ = ("_get", "field", "globs")

    def __init__(self, field: str, globs: GlobSet) -> None:
        self.field = field
        self.globs = globs
        self._get: Callable[[Intent], str] = operator.attrgetter(field)

    def holds(self, intent: Intent, now: datetime) -> bool:
        return self.globs.matches(self._get(intent))

    def failure(self, intent: Intent, now: datetime) -> str:
        return f"{self.field} {self._get(intent)!r} does not match {self.globs.describe()}"


class MemberCondition(Condition):
    """Exact membership: ``action_class`` and ``environment``."""

    __slots__ = ("_get", "field", "shown", "values")

    def __init__(self, field: str, values: Iterable[str]) -> None:
        self.field = field
        self.shown = tuple(dict.fromkeys(values))
        self.values = frozenset(self.shown)
        self._get: Callable[[Intent], str] = operator.attrgetter(field)

    def holds(self, intent: Intent, now: datetime) -> bool:
        return self._get(intent) in self.values

    def failure(self, intent: Intent, now: datetime) -> str:
        return f"{self.field} {str(self._get(intent))!r} not in [{', '.join(self.shown)}]"


class VolumeCondition(Condition):
    """Bounds on ``data_volume_bytes``; a request that gives no volume meets no threshold."""

    __slots__ = ("bounds",)

    _OPS: dict[str, Callable[[int, int], bool]] = {
        "gt": operator.gt,
        "gte": operator.ge,
        "lt": operator.lt,
        "lte": operator.le,
    }
    _SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

    def __init__(self, bounds: dict[str, int]) -> None:
        self.bounds = tuple((op, self._OPS[op], limit) for op, limit in bounds.items())

    def holds(self, intent: Intent, now: datetime) -> bool:
        volume = intent.data_volume_bytes
        if volume is None:
            return False
        return all(compare(volume, limit) for _, compare, limit in self.bounds)

    def failure(self, intent: Intent, now: datetime) -> str:
        volume = intent.data_volume_bytes
        if volume is None:
            return "data_volume_bytes not given (a threshold needs it)"
        for op, compare, limit in self.bounds:
            if not compare(volume, limit):
                return f"data_volume_bytes {volume} is not {self._SYMBOLS[op]} {limit}"
        return "data_volume_bytes is within the bounds"  # not reached when holds() is false


class TimeWindow:
    """Local wall-clock hours on some weekdays. Overnight windows (end < start) belong to the
    day they start on: ``fri 22:00-06:00`` covers Saturday 02:00 but not Friday 02:00."""

    __slots__ = ("days", "end", "start", "zone")

    def __init__(self, days: Iterable[str], start: time, end: time, zone: str) -> None:
        self.days = frozenset(_DAY_NAMES.index(day) for day in days)
        self.start = start
        self.end = end
        self.zone = ZoneInfo(zone)

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        clock = local.time()
        weekday = local.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= clock < self.end
        if clock >= self.start:
            return weekday in self.days
        return clock < self.end and (weekday - 1) % 7 in self.days

    def local_text(self, now: datetime) -> str:
        return now.astimezone(self.zone).strftime("%a %Y-%m-%d %H:%M %Z")

    def describe(self) -> str:
        days = (
            "every day"
            if len(self.days) == 7
            else ",".join(_DAY_NAMES[d] for d in sorted(self.days))
        )
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"


class WindowCondition(Condition):
    """``within_hours`` (inside=True) or ``outside_hours`` (inside=False)."""

    __slots__ = ("inside", "window")

    def __init__(self, window: TimeWindow, *, inside: bool) -> None:
        self.window = window
        self.inside = inside

    def holds(self, intent: Intent, now: datetime) -> bool:
        return self.window.contains(now) is self.inside

    def failure(self, intent: Intent, now: datetime) -> str:
        where = "outside" if self.inside else "within"
        return f"{self.window.local_text(now)} is {where} {self.window.describe()}"


class BreakGlassCondition(Condition):
    __slots__ = ("required",)

    def __init__(self, required: bool) -> None:
        self.required = required

    def holds(self, intent: Intent, now: datetime) -> bool:
        return bool(intent.break_glass) == self.required

    def failure(self, intent: Intent, now: datetime) -> str:
        actual = str(bool(intent.break_glass)).lower()
        return f"break_glass is {actual}, rule needs {str(self.required).lower()}"
