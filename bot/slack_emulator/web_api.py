"""The Slack Web API methods the emulator answers, on top of the workspace state.

Each handler takes the decoded parameters and returns the JSON body of a successful answer,
or raises ``ApiError`` for Slack's ``{"ok": false, "error": ...}``. Token checks come first,
as on Slack: a missing token is ``not_authed``, a wrong one ``invalid_auth``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from bot.slack_emulator.block_limits import MESSAGE_BLOCKS, check_blocks, check_text
from bot.slack_emulator.entities import JsonDict, MessageVersion, View
from bot.slack_emulator.faults import Faults
from bot.slack_emulator.identity import (
    APP_ID,
    BOT_ID,
    BOT_NAME,
    BOT_USER_ID,
    TEAM_ID,
    TEAM_NAME,
    TEAM_URL,
)
from bot.slack_emulator.view_store import ViewStore, parse_view
from bot.slack_emulator.workspace import ApiError, Workspace

Handler = Callable[[JsonDict], JsonDict]
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
RESPONSE_URL_METHOD = "response_url"


class WebApi:
    def __init__(
        self,
        workspace: Workspace,
        views: ViewStore,
        *,
        bot_token: str | None = None,
        app_token: str | None = None,
        socket_base: Callable[[], str],
    ) -> None:
        self.workspace = workspace
        self.views = views
        self.bot_token = bot_token
        self.app_token = app_token
        self._socket_base = socket_base
        self.handlers: dict[str, Handler] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "conversations.open": self.conversations_open,
            "users.info": self.users_info,
            "users.lookupByEmail": self.users_lookup_by_email,
            "usergroups.users.list": self.usergroups_users_list,
            "views.open": self.views_open,
            "views.push": self.views_push,
            "views.update": self.views_update,
            "views.publish": self.views_publish,
            "apps.connections.open": self.apps_connections_open,
        }

    def knows(self, method: str) -> bool:
        return method in self.handlers

    def check_token(self, method: str, token: str | None) -> None:
        if not token:
            raise ApiError("not_authed")
        wants_app = method in APP_TOKEN_METHODS
        if token.startswith("xapp-") != wants_app:
            raise ApiError("not_allowed_token_type")
        expected = self.app_token if wants_app else self.bot_token
        if expected is not None and token != expected:
            raise ApiError("invalid_auth")
        if expected is None and not token.startswith("xapp-" if wants_app else "xoxb-"):
            raise ApiError("invalid_auth")

    def call(self, method: str, params: JsonDict) -> JsonDict:
        return {"ok": True, **self.handlers[method](params)}

    # -- auth and chat ---------------------------------------------------------------------

    def auth_test(self, params: JsonDict) -> JsonDict:
        return {
            "url": TEAM_URL,
            "team": TEAM_NAME,
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def chat_post_message(self, params: JsonDict) -> JsonDict:
        version = _version(params, require_content=True)
        message = self.workspace.post(_str(params, "channel"), version, _str(params, "thread_ts"))
        return {
            "channel": message.channel,
            "ts": message.ts,
            "message": message.as_payload(TEAM_ID),
        }

    def chat_update(self, params: JsonDict) -> JsonDict:
        text = _str(params, "text") if "text" in params else None
        if text is not None:
            check_text(text)
        message = self.workspace.update(
            _str(params, "channel"),
            _str(params, "ts"),
            text=text,
            blocks=_blocks(params) if "blocks" in params else None,
            attachments=_list(params, "attachments") if "attachments" in params else None,
            metadata=_dict(params, "metadata"),
        )
        return {
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_payload(TEAM_ID),
        }

    def chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        version = _version(params, require_content=True)
        ephemeral = self.workspace.post_ephemeral(
            _str(params, "channel"), _str(params, "user"), version, _str(params, "thread_ts")
        )
        return {"message_ts": ephemeral.message_ts}

    def chat_get_permalink(self, params: JsonDict) -> JsonDict:
        channel = self.workspace.resolve_channel(_str(params, "channel"), open_dm=False)
        ts = _str(params, "message_ts")
        if (channel, ts) not in self.workspace.messages:
            raise ApiError("message_not_found")
        return {
            "channel": channel,
            "permalink": f"{TEAM_URL}archives/{channel}/p{ts.replace('.', '')}",
        }

    # -- people and conversations ----------------------------------------------------------

    def conversations_open(self, params: JsonDict) -> JsonDict:
        users = [u.strip() for u in _str(params, "users").split(",") if u.strip()]
        if not users:
            existing = _str(params, "channel")
            if not existing:
                raise ApiError("users_list_not_supplied")
            channel = self.workspace.resolve_channel(existing, open_dm=False)
            return {"no_op": True, "already_open": True, "channel": {"id": channel}}
        if len(users) > 8:
            raise ApiError("too_many_users")
        if len(users) == 1:
            channel, already = self.workspace.open_dm(users[0])
        else:
            channel, already = self.workspace.open_mpim(users)
        body: JsonDict = {"channel": {"id": channel}}
        if already:
            body.update(no_op=True, already_open=True)
        return body

    def users_info(self, params: JsonDict) -> JsonDict:
        return {"user": self.workspace.user(_str(params, "user")).as_payload()}

    def users_lookup_by_email(self, params: JsonDict) -> JsonDict:
        return {"user": self.workspace.user_by_email(_str(params, "email")).as_payload()}

    def usergroups_users_list(self, params: JsonDict) -> JsonDict:
        return {"users": self.workspace.usergroup_users(_str(params, "usergroup"))}

    # -- views -----------------------------------------------------------------------------

    def views_open(self, params: JsonDict) -> JsonDict:
        spec = parse_view(params, "modal")
        self.views.exchange_trigger(_str(params, "trigger_id"))
        return {"view": self.views.add_view(spec, trigger_id=_str(params, "trigger_id")).payload}

    def views_push(self, params: JsonDict) -> JsonDict:
        spec = parse_view(params, "modal")
        self.views.exchange_trigger(_str(params, "trigger_id"))
        modals = self.views.modals()
        previous: View | None = modals[-1] if modals else None
        view = self.views.add_view(spec, trigger_id=_str(params, "trigger_id"), previous=previous)
        return {"view": view.payload}

    def views_update(self, params: JsonDict) -> JsonDict:
        current = self.views.find_view(_str(params, "view_id"), _str(params, "external_id"))
        spec = parse_view(params, current.type)
        return {"view": self.views.update_view(current, spec, _str(params, "hash")).payload}

    def views_publish(self, params: JsonDict) -> JsonDict:
        spec = parse_view(params, "home")
        self.workspace.user(_str(params, "user_id"))
        view = self.views.publish_home(_str(params, "user_id"), spec, _str(params, "hash"))
        return {"view": view.payload}

    def apps_connections_open(self, params: JsonDict) -> JsonDict:
        # A loopback address nobody serves: Socket Mode itself is out of the emulator's scope.
        ticket = secrets.token_hex(16)
        return {"url": f"{self._socket_base()}link/?ticket={ticket}&app_id={APP_ID}"}


def dispatch(
    api: WebApi, faults: Faults, method: str, params: JsonDict, token: str, decode_error: str | None
) -> tuple[int, JsonDict, dict[str, str]]:
    """Status, body and extra headers for one call; runs under the lock."""
    if method != RESPONSE_URL_METHOD and not api.knows(method):
        return 200, {"ok": False, "error": "unknown_method"}, {}
    failure = faults.take(method)
    if failure is not None:
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        return failure.status, {"ok": False, "error": failure.error}, headers
    if decode_error is not None:
        return 200, {"ok": False, "error": decode_error}, {}
    if method == RESPONSE_URL_METHOD:
        return 200, {"ok": True}, {}
    try:
        api.check_token(method, token)
        return 200, api.call(method, params), {}
    except ApiError as exc:
        body: JsonDict = {"ok": False, "error": exc.error}
        if exc.messages:
            body["response_metadata"] = {"messages": list(exc.messages)}
        return 200, body, {}
    except Exception as exc:  # a emulator bug must show up as a failed call, not a hang
        return 500, {"ok": False, "error": "internal_error", "detail": repr(exc)}, {}


def _str(params: JsonDict, key: str) -> str:
    value = params.get(key)
    return "" if value is None else str(value)


def _list(params: JsonDict, key: str) -> list[JsonDict] | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, list):
        raise ApiError("invalid_arguments", f"[ERROR] {key} must be a list")
    return value


def _dict(params: JsonDict, key: str) -> JsonDict | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise ApiError("invalid_metadata" if key == "metadata" else "invalid_arguments")
    return value


def _blocks(params: JsonDict) -> list[JsonDict] | None:
    return check_blocks(params.get("blocks"), limit=MESSAGE_BLOCKS, error="invalid_blocks")


def _version(params: JsonDict, *, require_content: bool) -> MessageVersion:
    text = _str(params, "text")
    check_text(text)
    blocks = _blocks(params)
    attachments = _list(params, "attachments")
    if require_content and not (text or blocks or attachments):
        raise ApiError("no_text")
    return MessageVersion(text, blocks, attachments, _dict(params, "metadata"))
