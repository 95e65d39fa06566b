"""The Slack emulator ships in the product for tests and the local sandbox, never for production.

Importing the entry points and building the runtime must leave ``bot.slack_emulator`` unloaded,
with Slack configured (real Slack) and without. When the sandbox (DESIGN §15) lands, it is the
one path that may import the emulator, and only when it is switched on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BUILD_AND_CHECK = """
import sys

import bot.cli
import bot.server
import bot.wiring
from bot.settings import Settings

runtime = bot.server.build_runtime(Settings())
try:
    assert (runtime.slack is not None) == bool(sys.argv[1]), runtime.slack
finally:
    runtime.context.service.db.dispose()
loaded = sorted(m for m in sys.modules if m.startswith("bot.slack_emulator"))
assert not loaded, loaded
print("emulator not loaded")
"""


@pytest.mark.parametrize("slack", [False, True], ids=["no-slack", "slack"])
def test_production_paths_do_not_import_the_emulator(tmp_path: Path, slack: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        PYTHONPATH=str(REPO),
        STEPUP_DATABASE_URL=f"sqlite:///{tmp_path / 'stepup.db'}",
        STEPUP_POLICY_FILE=str(REPO / "manifests" / "policy.example.yaml"),
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
    )
    if slack:
        env.update(
            SLACK_BOT_TOKEN="xoxb-1-0123456789",
            SLACK_SIGNING_SECRET="0123456789abcdef0123456789abcdef",
            STEPUP_SLACK_API_URL="http://127.0.0.1:9/api/",
        )
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_CHECK, "1" if slack else ""],
        cwd=tmp_path,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "emulator not loaded"
