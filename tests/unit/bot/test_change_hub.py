"""The change hub wakes long-polls, and leaves the event loop alone when nobody waits."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.api.changes import ChangeHub


def test_a_change_nobody_waits_on_does_not_touch_the_loop() -> None:
    loop = asyncio.new_event_loop()
    calls: list[Any] = []
    real = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    hub = ChangeHub()
    hub.bind(loop)
    try:
        hub.notify_id("req_nobody")
        assert calls == []

        async def wait_for_change() -> bool:
            event = hub.register("req_watched")
            try:
                hub.notify_id("req_other")  # another request: still not woken
                hub.notify_id("req_watched")
                await asyncio.wait_for(event.wait(), 5)
                return event.is_set()
            finally:
                hub.unregister("req_watched", event)

        assert loop.run_until_complete(wait_for_change())
        assert calls == [("req_watched",)]
        hub.notify_id("req_watched")  # unregistered again
        assert calls == [("req_watched",)]
    finally:
        loop.close()
