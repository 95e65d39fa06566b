"""What the emulator remembers: calls received, messages, ephemerals, views and people.

Records are frozen; an edit replaces a record with a new one carrying the longer history, so a
test holding a record never sees it change under its feet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.slack_emulator.identity import TEAM_ID

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One HTTP request to the Web API, as received and as answered."""

    method: str
    params: JsonDict
    headers: dict[str, str]
    at: float
    status: int
    response: JsonDict

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class MessageVersion:
    text: str
    blocks: list[JsonDict] | None
    attachments: list[JsonDict] | None
    metadata: JsonDict | None
    edited_ts: str | None = None


@dataclass(frozen=True)
class Message:
    """A message posted by the bot; ``versions`` holds the original then each chat.update."""

    channel: str
    ts: str
    thread_ts: str | None
    user: str
    bot_id: str
    versions: tuple[MessageVersion, ...]

    @property
    def latest(self) -> MessageVersion:
        return self.versions[-1]

    @property
    def text(self) -> str:
        return self.latest.text

    @property
    def blocks(self) -> list[JsonDict]:
        return self.latest.blocks or []

    @property
    def attachments(self) -> list[JsonDict]:
        return self.latest.attachments or []

    @property
    def metadata(self) -> JsonDict | None:
        return self.latest.metadata

    @property
    def history(self) -> tuple[MessageVersion, ...]:
        """Earlier versions, oldest first (empty when never edited)."""
        return self.versions[:-1]

    @property
    def edited(self) -> bool:
        return len(self.versions) > 1

    def action_ids(self) -> list[str]:
        """The ``action_id`` of every interactive element in the latest blocks."""
        found: list[str] = []
        for block in self.blocks:
            for element in block.get("elements", []) or []:
                if isinstance(element, dict) and "action_id" in element:
                    found.append(str(element["action_id"]))
            accessory = block.get("accessory")
            if isinstance(accessory, dict) and "action_id" in accessory:
                found.append(str(accessory["action_id"]))
        return found

    def as_payload(self, team_id: str = TEAM_ID) -> JsonDict:
        """The message as Slack shows it in API answers and interaction payloads."""
        payload: JsonDict = {
            "type": "message",
            "subtype": "bot_message",
            "text": self.text,
            "user": self.user,
            "bot_id": self.bot_id,
            "team": team_id,
            "ts": self.ts,
        }
        if self.latest.blocks is not None:
            payload["blocks"] = self.latest.blocks
        if self.latest.attachments is not None:
            payload["attachments"] = self.latest.attachments
        if self.latest.metadata is not None:
            payload["metadata"] = self.latest.metadata
        if self.thread_ts is not None:
            payload["thread_ts"] = self.thread_ts
        if self.latest.edited_ts is not None:
            payload["edited"] = {"user": self.user, "ts": self.latest.edited_ts}
        return payload


@dataclass(frozen=True)
class Ephemeral:
    channel: str
    user: str
    message_ts: str
    text: str
    blocks: list[JsonDict] | None
    thread_ts: str | None


@dataclass(frozen=True)
class View:
    """A modal or Home tab; ``versions`` holds each payload the bot sent, newest last."""

    id: str
    type: str
    versions: tuple[JsonDict, ...]
    trigger_id: str | None = None
    user: str | None = None
    hash: str = ""

    @property
    def payload(self) -> JsonDict:
        return self.versions[-1]

    @property
    def callback_id(self) -> str:
        return str(self.payload.get("callback_id") or "")

    @property
    def private_metadata(self) -> str:
        return str(self.payload.get("private_metadata") or "")

    @property
    def blocks(self) -> list[JsonDict]:
        blocks = self.payload.get("blocks")
        return blocks if isinstance(blocks, list) else []


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    real_name: str
    display_name: str
    team_id: str
    tz: str = "Europe/London"
    is_bot: bool = False
    deleted: bool = False
    extra_profile: JsonDict = field(default_factory=dict)

    def as_payload(self) -> JsonDict:
        offset = datetime.now(ZoneInfo(self.tz)).utcoffset()
        profile: JsonDict = {
            "email": self.email,
            "real_name": self.real_name,
            "real_name_normalized": self.real_name,
            "display_name": self.display_name,
            "display_name_normalized": self.display_name,
            "team": self.team_id,
            **self.extra_profile,
        }
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1732791234,
        }
