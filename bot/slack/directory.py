"""Who a Slack user is (email, name) and who is in a user group, cached briefly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from core.model import Approver


class _TtlCache:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.clock = clock
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] < self.clock():
                return None
            return hit[1]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (self.clock() + self.ttl, value)


class SlackDirectory:
    """users.info, users.lookupByEmail and usergroups.users.list behind a short cache.

    Membership changes in Slack take effect within ``ttl_seconds``; a lookup that fails is not
    cached, and the caller treats "unknown" as "not eligible" (fail closed).
    """

    def __init__(self, client: WebClient, *, ttl_seconds: float = 60.0) -> None:
        self.client = client
        self._users = _TtlCache(ttl_seconds)
        self._groups = _TtlCache(ttl_seconds)
        self._emails = _TtlCache(ttl_seconds)

    def approver(self, user_id: str) -> Approver:
        cached = self._users.get(user_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            user = self.client.users_info(user=user_id)["user"]
        except SlackApiError:
            return Approver(user_id, None, None)  # unknown email: never eligible to approve
        profile = user.get("profile") or {}
        email = profile.get("email")
        name = profile.get("real_name") or user.get("real_name") or user.get("name")
        found = Approver(user_id, email.lower() if isinstance(email, str) else None, name)
        self._users.put(user_id, found)
        return found

    def user_id_for(self, email: str) -> str | None:
        """The workspace member whose profile email is exactly ``email`` (ignoring case), or
        None: no such member, a deactivated account, or a bot. Nobody is found by a near
        match, so a message meant for that address reaches that person or no one."""
        key = email.strip().lower()
        if not key:
            return None
        cached = self._emails.get(key)
        if cached is not None:
            return str(cached)
        try:
            user = self.client.users_lookupByEmail(email=key)["user"]
        except SlackApiError as exc:
            if exc.response.get("error") == "users_not_found":
                return None
            raise
        if not isinstance(user, dict) or not _is_member_with_email(user, key):
            return None
        user_id = str(user["id"])
        self._emails.put(key, user_id)
        return user_id

    def usergroup_members(self, usergroup_id: str) -> frozenset[str]:
        cached = self._groups.get(usergroup_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            users = self.client.usergroups_users_list(usergroup=usergroup_id)["users"]
        except SlackApiError:
            return frozenset()
        members = frozenset(str(u) for u in users)
        self._groups.put(usergroup_id, members)
        return members


def _is_member_with_email(user: dict[str, Any], email: str) -> bool:
    profile = user.get("profile") or {}
    found = profile.get("email") if isinstance(profile, dict) else None
    return (
        isinstance(found, str)
        and found.strip().lower() == email
        and bool(user.get("id"))
        and not user.get("deleted")
        and not user.get("is_bot")
        and str(user.get("id")) != "USLACKBOT"
    )
