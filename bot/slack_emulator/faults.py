"""Faults a test orders up: rate limits, failures and slow answers, per method or for all.

Counted faults are used up one call at a time, oldest order first; ``None`` as the method
means every method. Not thread-safe on its own: the server calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Failure:
    """An answer to give instead of the real one."""

    status: int
    error: str
    retry_after: int | None = None


@dataclass
class _Counted:
    method: str | None
    remaining: int
    failure: Failure


class Faults:
    def __init__(self) -> None:
        self._counted: list[_Counted] = []
        self._delays: dict[str | None, float] = {}

    def rate_limit(self, method: str | None, times: int, retry_after: int) -> None:
        self._add(method, times, Failure(429, "ratelimited", retry_after))

    def fail(self, method: str | None, times: int, error: str, status: int) -> None:
        self._add(method, times, Failure(status, error))

    def slow(self, method: str | None, seconds: float) -> None:
        if seconds <= 0:
            self._delays.pop(method, None)
        else:
            self._delays[method] = seconds

    def reset(self) -> None:
        self._counted.clear()
        self._delays.clear()

    def delay_for(self, method: str) -> float:
        return max(self._delays.get(method, 0.0), self._delays.get(None, 0.0))

    def take(self, method: str) -> Failure | None:
        """The next counted fault for ``method``, used up by this call."""
        for fault in self._counted:
            if fault.method in (method, None):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._counted.remove(fault)
                return fault.failure
        return None

    def _add(self, method: str | None, times: int, failure: Failure) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        self._counted.append(_Counted(method, times, failure))
