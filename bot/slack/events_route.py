"""``POST /slack/events``: hands Slack's request to Bolt in the threadpool, never on the loop."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from slack_bolt import App
from slack_bolt.request import BoltRequest
from starlette.concurrency import run_in_threadpool


def slack_router(app: App) -> APIRouter:
    router = APIRouter()

    @router.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        bolt_request = BoltRequest(
            body=body,
            query=dict(request.query_params),
            headers={k: [v] for k, v in request.headers.items()},
        )
        answer = await run_in_threadpool(app.dispatch, bolt_request)
        return Response(
            status_code=answer.status,
            content=answer.body,
            headers=answer.first_headers_without_set_cookie(),
        )

    return router
