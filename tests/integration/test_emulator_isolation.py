"""The Slack emulator ships in the product for tests and the local sandbox, never for production.

Importing the entry points and building the runtime leaves ``bot.slack_emulator`` unloaded with
real Slack configured, with the sandbox switched off, and when the API listens beyond loopback.
Sandbox mode (docs/sandbox.md) is the one path that loads it, and only when it is on: no Slack token
and a loopback address.
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
    assert (runtime.sandbox is not None) == bool(sys.argv[2]), runtime.sandbox
finally:
    if runtime.sandbox is not None:
        runtime.sandbox.stop()
    runtime.context.service.db.dispose()
loaded = sorted(m for m in sys.modules if m.startswith("bot.slack_emulator"))
print("emulator loaded" if loaded else "emulator not loaded")
"""

SLACK = {
    "SLACK_BOT_TOKEN": "xoxb-1-0123456789",
    "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
    "STEPUP_SLACK_API_URL": "http://127.0.0.1:9/api/",
}


@pytest.mark.parametrize(
    ("extra", "slack", "sandbox"),
    [
        (SLACK, True, False),
        ({"STEPUP_SANDBOX": "0"}, False, False),
        ({"STEPUP_HOST": "0.0.0.0"}, False, False),
        ({}, True, True),
    ],
    ids=["slack", "sandbox-off", "not-loopback", "sandbox"],
)
def test_only_sandbox_mode_imports_the_emulator(
    tmp_path: Path, extra: dict[str, str], slack: bool, sandbox: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        PYTHONPATH=str(REPO),
        STEPUP_DATABASE_URL=f"sqlite:///{tmp_path / 'stepup.db'}",
        STEPUP_POLICY_FILE=str(REPO / "manifests" / "policy.example.yaml"),
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
        **extra,
    )
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_CHECK, "1" if slack else "", "1" if sandbox else ""],
        cwd=tmp_path,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = "emulator loaded" if sandbox else "emulator not loaded"
    assert done.stdout.strip() == expected
