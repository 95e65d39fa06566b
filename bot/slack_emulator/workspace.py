"""The emulator workspace's state and the rules Slack applies to it.

Not thread-safe on its own: the server calls it under one lock.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from bot.slack_emulator.entities import Ephemeral, JsonDict, Message, MessageVersion, User
from bot.slack_emulator.identity import BOT_ID, BOT_USER_ID, TEAM_ID


class ApiError(Exception):
    """A Slack ``{"ok": false, "error": ...}`` answer; ``messages`` fill response_metadata."""

    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages


class TsClock:
    """Message timestamps like Slack's ``"1732791234.000100"``, strictly increasing."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seconds = 0
        self._sequence = 0

    def next(self) -> str:
        seconds = int(self._clock())
        if seconds > self._seconds:
            self._seconds, self._sequence = seconds, 100
        else:
            self._sequence += 1
            if self._sequence > 999_999:
                self._seconds, self._sequence = self._seconds + 1, 100
        return f"{self._seconds}.{self._sequence:06d}"


class Workspace:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channels: dict[str, str] = {}
        self.dm_channels: dict[str, str] = {}
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[Ephemeral] = []
        self._ts = TsClock()

    # -- directory ---------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        email: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        display_name: str | None = None,
        tz: str = "Europe/London",
        is_bot: bool = False,
        deleted: bool = False,
    ) -> User:
        """Seed a person; ``name`` defaults to the email's local part."""
        handle = name or email.split("@")[0]
        user = User(
            id=user_id,
            email=email,
            name=handle,
            real_name=real_name or handle.title(),
            display_name=handle if display_name is None else display_name,
            team_id=TEAM_ID,
            tz=tz,
            is_bot=is_bot,
            deleted=deleted,
        )
        self.users[user_id] = user
        return user

    def user(self, user_id: str) -> User:
        try:
            return self.users[user_id]
        except KeyError:
            raise ApiError("user_not_found") from None

    def user_by_email(self, email: str) -> User:
        for user in self.users.values():
            if user.email.lower() == email.strip().lower():
                return user
        raise ApiError("users_not_found")

    def usergroup_users(self, group_id: str) -> list[str]:
        try:
            return list(self.usergroups[group_id])
        except KeyError:
            raise ApiError("no_such_subteam") from None

    def open_dm(self, user_id: str) -> tuple[str, bool]:
        """The DM channel with ``user_id`` and whether it was already open."""
        self.user(user_id)
        if user_id in self.dm_channels:
            return self.dm_channels[user_id], True
        channel = "D" + user_id[1:]
        self.dm_channels[user_id] = channel
        return channel, False

    def open_mpim(self, user_ids: list[str]) -> tuple[str, bool]:
        """A group DM with several users (the bot included implicitly)."""
        for user_id in user_ids:
            self.user(user_id)
        digest = hashlib.sha1("|".join(sorted(user_ids)).encode(), usedforsecurity=False)
        channel = "G0" + digest.hexdigest()[:9].upper()
        already = channel in self.channels
        self.channels[channel] = "mpdm-" + "--".join(self.users[u].name for u in user_ids) + "-1"
        return channel, already

    def resolve_channel(self, channel: str, *, open_dm: bool) -> str:
        """A conversation id from an id, a ``#name`` or (when posting) a user id."""
        if not channel:
            raise ApiError("channel_not_found")
        if channel in self.channels or channel in self.dm_channels.values():
            return channel
        name = channel.removeprefix("#")
        for channel_id, channel_name in self.channels.items():
            if channel_name == name:
                return channel_id
        if open_dm and channel[0] in "UW" and channel in self.users:
            return self.open_dm(channel)[0]
        raise ApiError("channel_not_found")

    # -- messages --------------------------------------------------------------------------

    def post(self, channel: str, version: MessageVersion, thread_ts: str | None) -> Message:
        channel_id = self.resolve_channel(channel, open_dm=True)
        if thread_ts and (channel_id, thread_ts) not in self.messages:
            raise ApiError("thread_not_found")
        message = Message(
            channel=channel_id,
            ts=self._ts.next(),
            thread_ts=thread_ts or None,
            user=BOT_USER_ID,
            bot_id=BOT_ID,
            versions=(version,),
        )
        self.messages[(channel_id, message.ts)] = message
        return message

    def update(
        self,
        channel: str,
        ts: str,
        *,
        text: str | None,
        blocks: list[JsonDict] | None,
        attachments: list[JsonDict] | None,
        metadata: JsonDict | None,
    ) -> Message:
        """Edit a message; a field left out (``None``) keeps its value, as on Slack."""
        channel_id = self.resolve_channel(channel, open_dm=False)
        current = self.messages.get((channel_id, ts))
        if current is None:
            raise ApiError("message_not_found")
        old = current.latest
        edited = MessageVersion(
            text=old.text if text is None else text,
            blocks=old.blocks if blocks is None else blocks,
            attachments=old.attachments if attachments is None else attachments,
            metadata=old.metadata if metadata is None else metadata,
            edited_ts=self._ts.next(),
        )
        updated = replace(current, versions=(*current.versions, edited))
        self.messages[(channel_id, ts)] = updated
        return updated

    def post_ephemeral(
        self, channel: str, user: str, version: MessageVersion, thread_ts: str | None
    ) -> Ephemeral:
        self.user(user)
        channel_id = self.resolve_channel(channel, open_dm=False)
        ephemeral = Ephemeral(
            channel=channel_id,
            user=user,
            message_ts=self._ts.next(),
            text=version.text,
            blocks=version.blocks,
            thread_ts=thread_ts or None,
        )
        self.ephemerals.append(ephemeral)
        return ephemeral

    # -- queries ---------------------------------------------------------------------------

    def ordered_messages(self, channel: str | None = None) -> list[Message]:
        chosen: Iterable[Message] = self.messages.values()
        if channel is not None:
            channel_id = self._query_channel(channel)
            chosen = (m for m in chosen if m.channel == channel_id)
        return sorted(chosen, key=lambda m: (float(m.ts), m.ts))

    def _query_channel(self, channel: str) -> str:
        if channel[:1] in ("U", "W") and channel in self.dm_channels:
            return self.dm_channels[channel]
        try:
            return self.resolve_channel(channel, open_dm=False)
        except ApiError:
            return channel
