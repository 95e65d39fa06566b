"""Primitive matchers compiled once at load: glob sets and local-time windows."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from datetime import datetime, time
from zoneinfo import ZoneInfo

from core.names import fold

_WILDCARD = re.compile(r"[*?\[]")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class GlobSet:
    """fnmatch-style patterns that ignore letter case (``core.names.fold``): literals are
    compared folded, wildcards compiled case-blind (``re.IGNORECASE``, ASCII), so
    ``PAYMENTS-db`` meets ``payments-*`` and a range such as ``[A-_]`` keeps its meaning. Literal
    patterns are compared by equality and the rest share one compiled regex, so a list of
    globs costs one set lookup and one match. ``patterns`` keeps them as written."""

    __slots__ = ("_literals", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._literals = frozenset(fold(p) for p in self.patterns if not _WILDCARD.search(p))
        wild = list(dict.fromkeys(p for p in self.patterns if _WILDCARD.search(p)))
        # Wildcards are compiled as written, case-blind: folding the pattern's text instead
        # would change what a range means ("[A-_]" would become the empty "[a-_]").
        self._regex: Callable[[str], re.Match[str] | None] | None = (
            re.compile("|".join(fnmatch.translate(p) for p in wild), re.IGNORECASE | re.ASCII).match
            if wild
            else None
        )

    def matches(self, value: str) -> bool:
        folded = fold(value)  # inlined matches_folded: this runs per residual condition
        if folded in self._literals:
            return True
        return self._regex is not None and self._regex(folded) is not None

    def matches_folded(self, folded: str) -> bool:
        """``matches`` for a value its caller has already folded (the engine's index key)."""
        if folded in self._literals:
            return True
        return self._regex is not None and self._regex(folded) is not None

    def describe(self) -> str:
        if len(self.patterns) == 1:
            return repr(self.patterns[0])
        return "any of [" + ", ".join(self.patterns) + "]"


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
        return f"{self._days_text()} {self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"

    def _days_text(self) -> str:
        """``every day``, ``mon-fri``, ``sat,sun``: runs of three or more days as a range."""
        if len(self.days) == 7:
            return "every day"
        runs: list[list[int]] = []
        for day in sorted(self.days):
            if runs and runs[-1][-1] == day - 1:
                runs[-1].append(day)
            else:
                runs.append([day])
        parts = [
            f"{_DAY_NAMES[run[0]]}-{_DAY_NAMES[run[-1]]}"
            if len(run) >= 3
            else ",".join(_DAY_NAMES[d] for d in run)
            for run in runs
        ]
        return ",".join(parts)
