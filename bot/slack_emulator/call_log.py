"""The log of every Web API call, and a bounded wait for calls that have not come yet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bot.slack_emulator.entities import Call

CallMatch = str | Callable[[Call], bool]


class CallLog:
    """Shares the server's condition, so a call is logged in the same step as its effects."""

    def __init__(self, cond: threading.Condition, limit: int | None = None) -> None:
        self._cond = cond
        self._calls: list[Call] = []
        self._limit = limit  # keep only the newest calls (a long-running sandbox); None: all

    def record(self, call: Call) -> None:
        with self._cond:
            self._calls.append(call)
            if self._limit is not None and len(self._calls) > self._limit:
                del self._calls[: len(self._calls) - self._limit]
            self._cond.notify_all()

    def calls(self, method: str | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def clear(self) -> None:
        with self._cond:
            self._calls.clear()

    def wait_for(self, match: CallMatch, timeout: float, count: int) -> list[Call]:
        accept = (lambda c: c.method == match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._calls if accept(c)]
                remaining = deadline - time.monotonic()
                if len(found) >= count:
                    return found
                if remaining <= 0:
                    seen = ", ".join(f"{c.method}:{c.status}" for c in self._calls) or "nothing"
                    raise TimeoutError(
                        f"{len(found)} of {count} matching calls after {timeout}s; seen: {seen}"
                    )
                self._cond.wait(remaining)
