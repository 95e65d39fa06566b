"""Refuse request bodies over a size limit before they reach the application."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SLACK_EVENTS_PATH = "/slack/events"
# A Slack click carries the whole message or modal it came from, form-encoded (up to ~3x), so
# Slack's requests get more room than the API's; still bounded.
MAX_SLACK_EVENT_BYTES = 1024 * 1024
# Before refusing, read (and drop) up to this much of the rest of the body: a client that is
# still sending when the server closes would otherwise get a connection reset instead of the
# 413. A body announcing more than this is refused at once and the connection closed.
DRAIN_BYTES = 1024 * 1024


class BodyLimitMiddleware:
    """Pure ASGI. With a Content-Length the check is immediate (the server never delivers
    more than it declares); a chunked body is buffered up to the limit, then replayed.
    ``path_limits`` gives some paths a limit of their own."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._refuse(send, limit)
                return
            if int(length) > limit:
                if int(length) <= DRAIN_BYTES:
                    await _drain(receive, DRAIN_BYTES)
                await self._refuse(send, limit)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_BYTES)
                await self._refuse(send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "type": "https://stepup.dev/problems/payload-too-large",
                "title": "Payload too large",
                "status": 413,
                "detail": f"request bodies are limited to {limit} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a request body, at most ``budget`` bytes."""
    drained = 0
    while drained <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
