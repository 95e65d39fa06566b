"""Sandbox mode switched on: the stand-in workspace, the real Slack app pointed at it, the page.

The Slack app is the one ``build_slack`` makes for a real workspace, in HTTP mode behind
``/slack/events`` with signature checks on; only its Web API base URL, bot token and signing
secret differ, and those are made here, fresh, for this process.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from bot.sandbox.routes import sandbox_router
from bot.sandbox.workspace import SandboxWorkspace, start_workspace
from bot.slack.app import SlackRuntime, build_slack
from bot.slack.events_route import slack_router
from core.service import Stepup


@dataclass
class Sandbox:
    workspace: SandboxWorkspace
    slack: SlackRuntime
    routers: tuple[APIRouter, ...]
    security_channel: str | None

    def stop(self) -> None:
        self.workspace.stop()


def build_sandbox(service: Stepup, *, security_channel: str | None) -> Sandbox:
    policy = service.policy.current
    channel = security_channel or policy.channels.get("security")
    workspace = start_workspace(policy, channel)
    try:
        slack = build_slack(
            service,
            bot_token=workspace.bot_token,
            signing_secret=workspace.signing_secret,
            api_url=workspace.emulator.api_url,
        )
    except BaseException:
        workspace.stop()
        raise
    routers = (
        slack_router(slack.app, signing_secret=workspace.signing_secret),
        sandbox_router(workspace),
    )
    return Sandbox(workspace, slack, routers, channel)
