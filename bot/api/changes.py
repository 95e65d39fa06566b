"""Wakes long-polls the moment a request changes, whichever thread committed the change."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable

from core.snapshots import RequestSnapshot


class ChangeHub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        # Set while any long-poll waits: the SQLite change watch runs only then.
        self.someone_waits = threading.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, snapshot: RequestSnapshot) -> None:
        """Service listener: safe to call from any thread."""
        self.notify_id(snapshot.id)

    def notify_id(self, request_id: str) -> None:
        """Wake the long-polls on one request (another replica changed it); any thread.
        Costs a dictionary lookup when nobody waits on it: the event loop is not disturbed
        (a long-poll registers before its first read, so it never misses a change)."""
        with self._lock:
            if request_id not in self._waiters:
                return
        self._call(self._wake, request_id)

    def wake_all(self) -> None:
        """Wake every long-poll to re-read (changes may have been missed); any thread."""
        self._call(self._wake_all)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(callback, *args)

    def _wake(self, request_id: str) -> None:
        with self._lock:
            events = list(self._waiters.get(request_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for waiters in self._waiters.values() for event in waiters]
        for event in events:
            event.set()

    def register(self, request_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiters[request_id].add(event)
            self.someone_waits.set()
        return event

    def unregister(self, request_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[request_id]
            if not self._waiters:
                self.someone_waits.clear()

    def waited(self) -> list[str]:
        """The ids of the requests long-polls wait on now; any thread."""
        with self._lock:
            return list(self._waiters)
