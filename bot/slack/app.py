"""The Bolt app: acknowledges every interaction at once, then works off the event loop.

Listeners only ``ack()`` and hand the work to a thread pool, so Bolt's own listener threads are
never held by a slow Slack API or database, and every click is acknowledged well within
Slack's 3 seconds. Request signatures are verified before Bolt sees a request
(``events_route.py``) and again by Bolt (``request_verification_enabled``); Bolt logs through
``bolt_logger``, which withholds request bodies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.slack.bolt_logging import bolt_logger, web_api_logger
from bot.slack.cards import (
    APPROVE,
    BREAK_GLASS_ACK,
    CONFIRM_BLOCK,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    DENY,
    DENY_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    REVOKE,
    SHOW_ALL,
    SHOW_PAGE,
)
from bot.slack.delivery import OutboxWorker
from bot.slack.directory import SlackDirectory
from bot.slack.handlers import ApprovalActions
from core.model import Vote
from core.service import Stepup

logger = logging.getLogger(__name__)


def web_client(token: str, base_url: str) -> WebClient:
    """A Web API client that honours 429 Retry-After and retries transient failures."""
    client = WebClient(token=token, base_url=base_url, timeout=10, logger=web_api_logger())
    client.retry_handlers.extend(
        [
            RateLimitErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=1),
            ConnectionErrorRetryHandler(max_retry_count=1),
        ]
    )
    return client


class BotIdentity:
    """Bolt's ``authorize`` without a Slack call per request.

    Bolt's single-team authorization calls ``auth.test`` on every request until one succeeds;
    with a slow or unreachable Slack that would hold every acknowledgement. This answers from
    memory and learns the bot's ids once, in the background, at start-up.
    """

    def __init__(self, client: WebClient) -> None:
        self.client = client
        self.info: dict[str, Any] = {}

    def learn(self) -> None:
        try:
            self.info = dict(self.client.auth_test().data)  # type: ignore[arg-type]
        except Exception as exc:  # Slack down at start: ids stay unknown, nothing else breaks
            logger.warning("auth.test failed (%s); continuing without the bot's ids", exc)

    def authorize_function(self) -> Callable[..., AuthorizeResult]:
        # Bolt passes arguments by the names in the signature, so this must be a function.
        def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id or self.info.get("team_id"),
                bot_token=self.client.token,
                bot_id=self.info.get("bot_id"),
                bot_user_id=self.info.get("user_id"),
            )

        return authorize


@dataclass
class SlackRuntime:
    app: App
    actions: ApprovalActions
    worker: OutboxWorker
    work: ThreadPoolExecutor
    identity: BotIdentity

    def start(self) -> None:
        self.work.submit(self.identity.learn)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        # Clicks already being handled finish (each is short and bounded by the Slack
        # client's timeout), so nothing writes to the database after the runtime stopped;
        # queued ones are dropped (Slack retries an unacknowledged click, these were acked).
        self.work.shutdown(wait=True, cancel_futures=True)


def _channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel") or {}
    if isinstance(channel, dict) and channel.get("id"):
        return str(channel["id"])
    container = body.get("container") or {}
    return str(container["channel_id"]) if container.get("channel_id") else None


def build_slack(
    service: Stepup,
    *,
    bot_token: str,
    signing_secret: str,
    api_url: str,
    outbox_poll_seconds: float = 1.0,
    outbox_max_backoff_seconds: float = 300.0,
) -> SlackRuntime:
    client = web_client(bot_token, api_url)
    directory = SlackDirectory(client)
    actions = ApprovalActions(service, client, directory)
    work = ThreadPoolExecutor(max_workers=8, thread_name_prefix="slack-work")
    identity = BotIdentity(client)
    app = App(
        client=client,
        authorize=identity.authorize_function(),
        signing_secret=signing_secret,
        logger=bolt_logger(),
        request_verification_enabled=True,
        process_before_response=False,
        listener_executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="bolt"),
    )

    def later(fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                logger.exception("Slack work failed: %s", getattr(fn, "__name__", fn))

        work.submit(run)

    @app.action(APPROVE)
    def _approve(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        action = body["actions"][0]
        later(
            actions.approve_clicked,
            action["value"],
            body["user"]["id"],
            _channel_of(body),
            body.get("trigger_id"),
        )

    @app.action(DENY)
    def _deny(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        # views.open needs the trigger id within 3 s of the click: do it first, in the pool.
        later(
            actions.deny_clicked,
            body["actions"][0]["value"],
            body["user"]["id"],
            _channel_of(body),
            body.get("trigger_id"),
        )

    @app.action(REVOKE)
    def _revoke(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        later(
            actions.revoke_clicked,
            body["actions"][0]["value"],
            body["user"]["id"],
            _channel_of(body),
        )

    @app.action(SHOW_ALL)
    def _show_all(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        later(
            actions.show_all_clicked,
            body["actions"][0]["value"],
            body["user"]["id"],
            body.get("trigger_id"),
        )

    @app.action(SHOW_PAGE)
    def _show_page(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        view = body.get("view") or {}
        later(
            actions.show_page_clicked,
            body["actions"][0]["value"],
            body["user"]["id"],
            view.get("id"),
        )

    @app.action(BREAK_GLASS_ACK)
    def _break_glass_ack(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        container = body.get("container") or {}
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        later(
            actions.break_glass_ack_clicked,
            body["actions"][0]["value"],
            body["user"]["id"],
            _channel_of(body),
            ts,
        )

    @app.view(DENY_MODAL)
    def _deny_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = (
            view["state"]["values"].get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("value") or ""
        ).strip()
        if len(reason) < 3:
            ack(response_action="errors", errors={REASON_BLOCK: "A denial needs a reason."})
            return
        ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        later(_vote, meta, body["user"]["id"], Vote.DENY, reason, None)

    @app.view(CONFIRM_MODAL)
    def _confirm_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        typed = (
            view["state"]["values"].get(CONFIRM_BLOCK, {}).get(CONFIRM_INPUT, {}).get("value") or ""
        )
        meta = json.loads(view.get("private_metadata") or "{}")
        problem = actions.confirmation_error(str(meta.get("request_id", "")), typed)
        if problem is not None:
            ack(response_action="errors", errors={CONFIRM_BLOCK: problem})
            return
        ack()
        later(_vote, meta, body["user"]["id"], Vote.APPROVE, None, typed.strip())

    def _vote(
        meta: dict[str, Any], user_id: str, vote: Vote, reason: str | None, typed: str | None
    ) -> None:
        actions.vote(
            str(meta.get("request_id", "")),
            user_id,
            meta.get("channel"),
            vote,
            reason=reason,
            confirmation=typed,
        )

    @app.command("/stepup")
    def _command(ack: Ack, command: dict[str, Any], respond: Any) -> None:
        ack()

        def run() -> None:
            text = actions.command(
                command.get("text", ""), command["user_id"], command.get("channel_id")
            )
            actions.tell(command.get("channel_id"), command["user_id"], text)

        later(run)

    @app.event("app_home_opened")
    def _home(ack: Ack, event: dict[str, Any]) -> None:
        ack()
        if event.get("tab", "home") == "home":
            later(actions.publish_home, event["user"])

    worker = OutboxWorker(
        service,
        client,
        directory,
        poll_seconds=outbox_poll_seconds,
        max_backoff_seconds=outbox_max_backoff_seconds,
    )
    return SlackRuntime(app=app, actions=actions, worker=worker, work=work, identity=identity)
