"""Modals and Home tabs: opened by trigger id, pushed, updated by id or external id, published.

Slack's rules kept here: a trigger id works once, a stale ``hash`` is a ``hash_conflict``, a
modal needs a title, and each Home tab is one view per user that publishing replaces.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import replace
from typing import Any

from bot.slack_emulator.block_limits import check_view
from bot.slack_emulator.entities import JsonDict, View
from bot.slack_emulator.identity import APP_ID, BOT_ID, TEAM_ID
from bot.slack_emulator.workspace import ApiError


class ViewStore:
    def __init__(self) -> None:
        self.views: dict[str, View] = {}
        self.home_views: dict[str, str] = {}
        self._used_triggers: set[str] = set()
        self._view_numbers = itertools.count(1)

    # -- views -----------------------------------------------------------------------------

    def exchange_trigger(self, trigger_id: str) -> None:
        """Trigger ids work once, as on Slack."""
        if not trigger_id:
            raise ApiError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        if trigger_id in self._used_triggers:
            raise ApiError("exchanged_trigger_id")
        self._used_triggers.add(trigger_id)

    def add_view(
        self,
        spec: JsonDict,
        *,
        trigger_id: str | None = None,
        user: str | None = None,
        previous: View | None = None,
    ) -> View:
        view_id = f"V0{next(self._view_numbers):07d}"
        root = previous.payload.get("root_view_id") if previous is not None else None
        payload = self._render(view_id, spec, root_view_id=str(root or view_id))
        payload["previous_view_id"] = previous.id if previous is not None else None
        view = View(
            id=view_id,
            type=str(spec["type"]),
            versions=(payload,),
            trigger_id=trigger_id,
            user=user,
            hash=str(payload["hash"]),
        )
        self.views[view_id] = view
        return view

    def find_view(self, view_id: str, external_id: str) -> View:
        if not (view_id or external_id):
            raise ApiError("invalid_arguments", "[ERROR] either view_id or external_id required")
        if view_id:
            found = self.views.get(view_id)
        else:
            found = next(
                (v for v in self.views.values() if v.payload.get("external_id") == external_id),
                None,
            )
        if found is None:
            raise ApiError("not_found")
        return found

    def update_view(self, view: View, spec: JsonDict, hash_: str) -> View:
        if hash_ and hash_ != view.hash:
            raise ApiError("hash_conflict")
        payload = self._render(view.id, spec, root_view_id=str(view.payload["root_view_id"]))
        payload["previous_view_id"] = view.payload.get("previous_view_id")
        updated = replace(view, versions=(*view.versions, payload), hash=str(payload["hash"]))
        self.views[view.id] = updated
        return updated

    def publish_home(self, user_id: str, spec: JsonDict, hash_: str) -> View:
        current_id = self.home_views.get(user_id)
        if current_id is not None:
            return self.update_view(self.views[current_id], spec, hash_)
        view = self.add_view(spec, user=user_id)
        self.home_views[user_id] = view.id
        return view

    def modals(self) -> list[View]:
        return [v for v in self.views.values() if v.type == "modal"]

    def _render(self, view_id: str, spec: JsonDict, *, root_view_id: str) -> JsonDict:
        payload: JsonDict = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": spec["type"],
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "title": None,
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            "root_view_id": root_view_id,
            "app_id": APP_ID,
            "external_id": "",
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        payload.update({k: v for k, v in spec.items() if k not in {"id", "hash", "state"}})
        return payload

    def home(self, user_id: str) -> View | None:
        view_id = self.home_views.get(user_id)
        return self.views[view_id] if view_id else None


def parse_view(params: JsonDict, kind: str) -> JsonDict:
    """The ``view`` argument, checked the way Slack checks it for a ``kind`` surface."""
    spec: Any = params.get("view")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            raise ApiError("invalid_arguments", "[ERROR] view must be JSON") from None
    if not isinstance(spec, dict):
        raise ApiError("invalid_arguments", "[ERROR] missing required field: view")
    if spec.get("type") != kind:
        raise ApiError("invalid_arguments", f"[ERROR] view type must be {kind}")
    if kind == "modal" and not spec.get("title"):
        raise ApiError("invalid_arguments", "[ERROR] missing required field: title")
    check_view(spec)
    return spec
