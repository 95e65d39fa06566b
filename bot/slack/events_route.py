"""``POST /slack/events``: checks Slack's signature on the raw bytes, then hands the request to
Bolt in the threadpool, never on the loop.

Anything malformed is refused here, before Bolt sees it: 401 for a missing, non-numeric or
stale timestamp and a missing or wrong signature, 400 for a signed body that is not UTF-8, lacks
a content type Slack sends, or does not parse. Nothing is dispatched, and no log line carries
the body (Bolt's own logging of refused requests never runs; ``bot/slack/bolt_logging.py``
withholds bodies from what Bolt logs otherwise). Oversize bodies are refused earlier, by
``BodyLimitMiddleware`` (``bot/api/limits.MAX_SLACK_EVENT_BYTES``), with 413.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt import App
from slack_bolt.request import BoltRequest
from starlette.concurrency import run_in_threadpool

from bot.api.limits import SLACK_EVENTS_PATH

MAX_CLOCK_SKEW_SECONDS = 5 * 60  # Slack's own advice for refusing replays
SLACK_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "application/json"})


def signature_valid(
    raw: bytes, timestamp: str | None, signature: str | None, secret: str, *, now: float
) -> bool:
    """Slack's v0 signature over ``v0:{timestamp}:{raw body}``, checked on the bytes as sent.
    Any doubt (no header, not a plain number, too old or too new) is a refusal."""
    if not timestamp or not signature:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + raw
    expected = b"v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest().encode()
    # Starlette decodes headers as latin-1, so this gives back the bytes that were sent.
    return hmac.compare_digest(expected, signature.encode("latin-1"))


def _refused(status: int) -> Response:
    return JSONResponse({"error": "invalid request"}, status_code=status)


def slack_router(
    app: App, *, signing_secret: str, clock: Callable[[], float] = time.time
) -> APIRouter:
    router = APIRouter()

    @router.post(SLACK_EVENTS_PATH, include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        raw = await request.body()
        headers = request.headers
        if not signature_valid(
            raw,
            headers.get("x-slack-request-timestamp"),
            headers.get("x-slack-signature"),
            signing_secret,
            now=clock(),
        ):
            return _refused(401)
        media_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if media_type not in SLACK_CONTENT_TYPES:
            return _refused(400)
        try:
            bolt_request = BoltRequest(
                body=raw.decode("utf-8"),
                query=dict(request.query_params),
                headers={k: [v] for k, v in headers.items()},
            )
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            return _refused(400)  # not UTF-8, or a payload Bolt cannot read: a client's error
        answer = await run_in_threadpool(app.dispatch, bolt_request)
        return Response(
            status_code=answer.status,
            content=answer.body,
            headers=answer.first_headers_without_set_cookie(),
        )

    return router
