"""Who the emulator workspace is: its team, the bot's identity and the people seeded by default.

Shared by the server (which answers as this workspace) and the request simulator (which sends
payloads from it), so both sides of a test agree on the ids without repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass

TEAM_ID = "T0STEPUP"
TEAM_NAME = "Stepup Test"
TEAM_DOMAIN = "stepup-test"
TEAM_URL = f"https://{TEAM_DOMAIN}.slack.com/"
APP_ID = "A0STEPUP"
BOT_ID = "B0STEPUP"
BOT_USER_ID = "U0STEPUPBOT"
BOT_NAME = "stepup"


@dataclass(frozen=True)
class SeedUser:
    user_id: str
    email: str
    real_name: str


DEFAULT_USERS: tuple[SeedUser, ...] = (
    SeedUser("U0ALICE", "alice@example.com", "Alice Archer"),
    SeedUser("U0BOB", "bob@example.com", "Bob Baker"),
    SeedUser("U0CAROL", "carol@example.com", "Carol Chen"),
    SeedUser("U0DAVE", "dave@example.com", "Dave Dunn"),
    SeedUser("U0EVE", "eve@example.com", "Eve Evans"),
    SeedUser("U0SAM", "sam@example.com", "Sam Sponsor"),
    SeedUser("U0OLGA", "olga@example.com", "Olga Owner"),
)

DEFAULT_CHANNELS: tuple[tuple[str, str], ...] = (
    ("C0APPROVALS", "approvals"),
    ("C0SECURITY", "security"),
)
