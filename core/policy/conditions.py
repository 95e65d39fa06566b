"""Match conditions: each answers ``holds`` fast and, for ``explain``, says why not."""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime

from core.model import Intent
from core.names import fold
from core.policy.matchers import GlobSet, TimeWindow
from core.policy.schema import MatchSpec, WindowSpec


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
    """Exact membership: ``action_class``, and ``environment`` with letter case ignored."""

    __slots__ = ("_fold", "_get", "field", "shown", "values")

    def __init__(self, field: str, values: Iterable[str], *, ignore_case: bool = False) -> None:
        self.field = field
        self.shown = tuple(dict.fromkeys(values))
        self._fold: Callable[[str], str] = fold if ignore_case else str
        self.values = frozenset(self._fold(value) for value in self.shown)
        self._get: Callable[[Intent], str] = operator.attrgetter(field)

    def holds(self, intent: Intent, now: datetime) -> bool:
        return self._fold(self._get(intent)) in self.values

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


def compile_conditions(match: MatchSpec, timezone: str) -> tuple[Condition, ...]:
    """The rule's conditions in the order its ``match`` keys were written."""
    return tuple(_condition(key, match, timezone) for key in match.keys_in_order())


def _condition(key: str, match: MatchSpec, timezone: str) -> Condition:
    if key in ("action", "target", "agent"):
        patterns: tuple[str, ...] = getattr(match, key)
        return GlobCondition(key, GlobSet(patterns))
    if key == "action_class" and match.action_class is not None:
        return MemberCondition(key, (str(value) for value in match.action_class))
    if key == "environment" and match.environment is not None:
        return MemberCondition(key, match.environment, ignore_case=True)
    if key == "data_volume_bytes" and match.data_volume_bytes is not None:
        return VolumeCondition(match.data_volume_bytes.model_dump(exclude_none=True))
    if key == "within_hours" and match.within_hours is not None:
        return WindowCondition(_window(match.within_hours, timezone), inside=True)
    if key == "outside_hours" and match.outside_hours is not None:
        return WindowCondition(_window(match.outside_hours, timezone), inside=False)
    if key == "break_glass" and match.break_glass is not None:
        return BreakGlassCondition(match.break_glass)
    raise AssertionError(f"unhandled match key {key!r}")  # pragma: no cover


def _window(spec: WindowSpec, timezone: str) -> TimeWindow:
    return TimeWindow(spec.days, spec.start, spec.end, spec.timezone or timezone)
