"""The sandbox's stand-in Slack: the emulator on loopback, seeded from the policy.

Every person named in an approver group gets a Slack user (an id listed in the file keeps its
id; an email gets one made from its local part), every channel of the policy a channel, and one
outsider who is in no group is added so the page can show a refusal. The bot token and signing
secret are made fresh at each start and never leave the process.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import threading
from dataclasses import dataclass, field

from bot.slack_emulator import SlackEmulator
from core.policy.engine import Policy

OUTSIDER_ID = "U0OUTSIDER"
OUTSIDER_EMAIL = "outsider@example.com"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
MAX_CALLS = 1_000  # the emulator's call log is for tests; the sandbox keeps only the newest


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str
    email: str
    groups: tuple[str, ...]

    @property
    def outsider(self) -> bool:
        return not self.groups


def _name(email_or_id: str) -> str:
    local = email_or_id.split("@")[0].removeprefix("U0")
    words = re.split(r"[._-]+", local)
    return " ".join(w.capitalize() for w in words if w) or email_or_id


def _id_for(email: str, taken: set[str]) -> str:
    base = "U0" + (re.sub(r"[^A-Z0-9]", "", email.split("@")[0].upper()) or "USER")
    candidate, n = base[:20], 2
    while candidate in taken:
        candidate, n = f"{base[:18]}{n}", n + 1
    return candidate


def people_of(policy: Policy) -> list[Person]:
    """The policy's approvers, each once (by id or email), then the outsider."""
    groups: dict[str, list[str]] = {}
    emails: dict[str, str] = {}  # user id -> email
    for group in policy.groups.values():
        for user_id in sorted(group.slack_users):
            groups.setdefault(user_id, []).append(group.name)
            emails.setdefault(user_id, f"{user_id.removeprefix('U0').lower()}@example.com")
    by_email = {email.lower(): uid for uid, email in emails.items()}
    for group in policy.groups.values():
        for email in sorted(group.emails):
            user_id = by_email.get(email) or _id_for(email, set(emails))
            by_email[email] = user_id
            emails.setdefault(user_id, email)
            if group.name not in groups.setdefault(user_id, []):
                groups[user_id].append(group.name)
    people = [
        Person(uid, _name(emails[uid]), emails[uid], tuple(names)) for uid, names in groups.items()
    ]
    people.append(Person(OUTSIDER_ID, "Oscar Outsider", OUTSIDER_EMAIL, ()))
    return people


@dataclass
class SandboxWorkspace:
    """The running stand-in: the emulator, its fresh secrets, who is in it."""

    emulator: SlackEmulator
    bot_token: str
    signing_secret: str
    people: tuple[Person, ...]
    channels: tuple[tuple[str, str], ...]  # (id, name), approvals first
    _triggers: dict[str, str] = field(default_factory=dict)  # trigger id -> user who clicked
    _closed: set[str] = field(default_factory=set)  # modal ids closed or submitted
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def person(self, user_id: str) -> Person | None:
        return next((p for p in self.people if p.user_id == user_id), None)

    def name_of(self, user_id: str) -> str:
        person = self.person(user_id)
        return person.name if person else user_id

    def new_trigger(self, user_id: str) -> str:
        trigger = f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        with self._lock:
            if len(self._triggers) > 10_000:
                self._triggers.clear()
            self._triggers[trigger] = user_id
        return trigger

    def user_of_trigger(self, trigger_id: str | None) -> str | None:
        with self._lock:
            return self._triggers.get(trigger_id or "")

    def close_view(self, view_id: str) -> None:
        with self._lock:
            self._closed.add(view_id)

    def is_closed(self, view_id: str) -> bool:
        with self._lock:
            return view_id in self._closed

    def stop(self) -> None:
        self.emulator.stop()


def start_workspace(policy: Policy, security_channel: str | None) -> SandboxWorkspace:
    """Seed and start the emulator on 127.0.0.1 with a fresh bot token and signing secret."""
    bot_token = "xoxb-sandbox-" + secrets.token_hex(16)
    signing_secret = secrets.token_hex(32)
    emulator = SlackEmulator(
        host="127.0.0.1", port=0, token=bot_token, seed=False, max_calls=MAX_CALLS
    )
    people = people_of(policy)
    for person in people:
        emulator.add_user(person.user_id, person.email, real_name=person.name)
    for group in policy.groups.values():
        if group.slack_usergroup:
            emulator.add_usergroup(group.slack_usergroup, [])
    channels: dict[str, str] = {}
    for name, channel_id in policy.channels.items():
        channels.setdefault(channel_id, name)
    if security_channel and security_channel not in channels:
        channels[security_channel] = security_channel.removeprefix("#").lower()
    for channel_id, name in channels.items():
        emulator.add_channel(channel_id, name)
    ordered = sorted(channels.items(), key=lambda c: (c[1] != "approvals", c[1]))
    emulator.start()
    return SandboxWorkspace(emulator, bot_token, signing_secret, tuple(people), tuple(ordered))
