"""The FastAPI application: routes, problem details, body limit, long-poll wiring."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import APIRouter, FastAPI

from bot.api import problems
from bot.api.admission import Admission, AdmissionMiddleware
from bot.api.context import ApiContext
from bot.api.limits import MAX_SLACK_EVENT_BYTES, SLACK_EVENTS_PATH, BodyLimitMiddleware
from bot.api.metrics import StepupMetrics, metrics_router
from bot.api.routes import router

MAX_BODY_BYTES = 64 * 1024


def create_app(
    ctx: ApiContext,
    *,
    extra_routers: list[APIRouter] | None = None,
    admission: Admission | None = None,
) -> FastAPI:
    """The app; ``admission`` bounds the agent API's requests in flight (``bot.api.admission``;
    default: its defaults), shown as ``app.state.admission``."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ctx.hub.bind(asyncio.get_running_loop())
        if ctx.threads is not None:
            to_thread.current_default_thread_limiter().total_tokens = ctx.threads
        yield

    app = FastAPI(
        title="stepup",
        version="1",
        description=(
            "Agents ask before they act; humans approve in Slack; "
            "credentials are scoped to one action and short-lived."
        ),
        lifespan=lifespan,
    )
    app.state.stepup = ctx
    ctx.service.subscribe(ctx.hub.notify)
    metrics = StepupMetrics(ctx.service.db, ctx.clock)
    ctx.service.subscribe(metrics.on_change)
    app.state.metrics = metrics
    problems.install(app)
    app.include_router(router)
    app.include_router(metrics_router(metrics))
    for extra in extra_routers or []:
        app.include_router(extra)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_BODY_BYTES,
        path_limits={SLACK_EVENTS_PATH: MAX_SLACK_EVENT_BYTES},
    )
    # Outermost: a request past the bound is refused before anything else runs.
    app.state.admission = admission or Admission()
    app.state.admission.expose(metrics.registry)
    app.add_middleware(AdmissionMiddleware, admission=app.state.admission)
    return app
