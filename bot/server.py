"""`stepup serve`: the API, the scheduler and (when configured) the Slack app in one process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.scheduler import DeadlineScheduler
from bot.settings import Settings
from bot.wiring import build_service
from core.agents import AgentRegistry

logger = logging.getLogger("stepup")


@dataclass
class Runtime:
    app: FastAPI
    scheduler: DeadlineScheduler
    context: ApiContext


def build_runtime(settings: Settings) -> Runtime:
    service = build_service(settings)
    context = ApiContext(service=service, registry=AgentRegistry(service))
    app = create_app(context)
    scheduler = DeadlineScheduler(service, sweep_interval_seconds=settings.sweep_interval_seconds)
    return Runtime(app, scheduler, context)


def serve(settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    runtime = build_runtime(settings)
    if not settings.slack_enabled:
        logger.warning(
            "Slack is not configured (SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET unset): approval "
            "cards will not be posted; pre-authorised and denied requests still work"
        )
    policy = runtime.context.service.policy.current
    logger.info(
        "policy %s loaded: %d rules (%s)",
        settings.policy_file,
        len(policy.rule_names),
        policy.digest,
    )
    runtime.scheduler.start()
    where = f"http://{settings.host}:{settings.port}"
    print(f"stepup listening on {where} (public URL {settings.public_url})", flush=True)
    try:
        uvicorn.run(runtime.app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        runtime.scheduler.shutdown()
        runtime.context.service.db.dispose()
