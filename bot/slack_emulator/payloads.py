"""Bodies shaped like the ones Slack sends to an app: interactions, slash commands, events.

Field sets follow Slack's reference for block_actions, view_submission, slash commands and the
Events API ``event_callback`` envelope; values default to the emulator workspace's identity.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from bot.slack_emulator.identity import APP_ID, BOT_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

JsonDict = dict[str, Any]
InputValue = str | None | Mapping[str, Any]


def user_ref(user_id: str, user_name: str) -> JsonDict:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID}


def team_ref() -> JsonDict:
    return {"id": TEAM_ID, "domain": TEAM_DOMAIN}


def new_trigger_id() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def placeholder_message(ts: str) -> JsonDict:
    """What a block_actions payload carries when the test gives no message of its own."""
    return {
        "type": "message",
        "subtype": "bot_message",
        "text": "",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "ts": ts,
        "blocks": [],
    }


def find_button(action_id: str, blocks: object) -> tuple[str | None, JsonDict]:
    """The block id and element of ``action_id`` in ``blocks`` (``None, {}`` if absent)."""
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        for element in [*(block.get("elements") or []), block.get("accessory")]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                block_id = block.get("block_id")
                return (str(block_id) if block_id is not None else None), element
    return None, {}


def button_action(
    action_id: str, value: str, block_id: str | None, blocks: object, action_ts: str
) -> JsonDict:
    """The ``actions[0]`` of a click, with the text and style of the button when known."""
    found_block, element = find_button(action_id, blocks)
    action: JsonDict = {
        "action_id": action_id,
        "block_id": block_id or found_block or "actions",
        "text": element.get("text") or {"type": "plain_text", "text": action_id, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": action_ts,
    }
    if "style" in element:
        action["style"] = element["style"]
    return action


def block_actions(
    *,
    action: JsonDict,
    user: JsonDict,
    token: str,
    trigger_id: str,
    response_url: str | None,
    channel: str | None,
    message: JsonDict | None,
    view: JsonDict | None,
) -> JsonDict:
    payload: JsonDict = {
        "type": "block_actions",
        "user": user,
        "api_app_id": APP_ID,
        "token": token,
        "team": team_ref(),
        "enterprise": None,
        "is_enterprise_install": False,
        "trigger_id": trigger_id,
        "actions": [action],
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id")}
        payload["view"] = view
        payload["state"] = view.get("state", {"values": {}})
        return payload
    if message is None or channel is None:
        raise ValueError("a click outside a view needs its channel and message")
    payload["container"] = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": False,
    }
    payload["channel"] = {"id": channel, "name": channel.lower()}
    payload["message"] = message
    payload["state"] = {"values": {}}
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def state_values(values: Mapping[str, Mapping[str, InputValue]]) -> JsonDict:
    """``view.state.values``: a plain string becomes a ``plain_text_input`` value; a mapping
    is passed through as the element's state (e.g. a select's ``selected_option``)."""
    state: JsonDict = {}
    for block_id, actions in values.items():
        state[block_id] = {
            action_id: dict(value)
            if isinstance(value, Mapping)
            else {"type": "plain_text_input", "value": value}
            for action_id, value in actions.items()
        }
    return state


def view_submission(
    *,
    callback_id: str,
    values: Mapping[str, Mapping[str, InputValue]],
    user: JsonDict,
    token: str,
    trigger_id: str,
    private_metadata: str,
    view_id: str,
    title: str,
) -> JsonDict:
    view: JsonDict = {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": "modal",
        "blocks": [],
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "state": {"values": state_values(values)},
        "hash": f"{secrets.randbelow(10**10)}.{secrets.token_hex(4)}",
        "title": {"type": "plain_text", "text": title, "emoji": True},
        "clear_on_close": False,
        "notify_on_close": False,
        "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
        "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": "",
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }
    return {
        "type": "view_submission",
        "team": team_ref(),
        "user": user,
        "api_app_id": APP_ID,
        "token": token,
        "trigger_id": trigger_id,
        "view": view,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def slash_command(
    *,
    command: str,
    text: str,
    user_id: str,
    user_name: str,
    token: str,
    channel_id: str,
    channel_name: str,
    response_url: str,
    trigger_id: str,
) -> dict[str, str]:
    return {
        "token": token,
        "team_id": TEAM_ID,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def event_callback(event: Mapping[str, Any], *, token: str, event_time: int) -> JsonDict:
    return {
        "token": token,
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": dict(event),
        "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}",
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{secrets.token_urlsafe(24)}",
    }
