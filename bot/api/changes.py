"""Wakes long-polls the moment a request changes, whichever thread committed the change."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

from core.records import RequestSnapshot


class ChangeHub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, snapshot: RequestSnapshot) -> None:
        """Service listener: safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, snapshot.id)

    def _wake(self, request_id: str) -> None:
        with self._lock:
            events = list(self._waiters.get(request_id, ()))
        for event in events:
            event.set()

    def register(self, request_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiters[request_id].add(event)
        return event

    def unregister(self, request_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[request_id]
