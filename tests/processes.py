"""Reading a subprocess's output while it runs (the demo agent, in the demo and browser tests)."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

import pytest


class Lines:
    """A subprocess's output, read as it comes; ``until`` waits for a line matching."""

    def __init__(self, process: subprocess.Popen[str], what: str) -> None:
        self.process, self.what = process, what
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True, name=f"read-{what}").start()

    def until(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.what} printed no {pattern!r} within {timeout:g}s:\n{self.text}")
            if line is None:
                self._queue.put(None)  # stays ended for the next call
                pytest.fail(f"{self.what} ended before {pattern!r}:\n{self.text}")
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    @property
    def text(self) -> str:
        return "".join(self.seen)
