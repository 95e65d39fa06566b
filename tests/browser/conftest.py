"""A real ``stepup serve`` in sandbox mode, a real headless Chromium, and the demo agent.

Chromium is Debian's ``chromium`` package (``STEPUP_CHROMIUM`` names another binary) driven by
Playwright's Python package with ``executable_path``: Playwright downloads no browser here.
Without Playwright, the browser or the sandbox page the test is skipped with the reason shown,
unless ``STEPUP_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes a missing browser a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.live import free_port
from tests.processes import Lines

REPO = Path(__file__).parents[2]
EXAMPLE_POLICY = REPO / "manifests" / "policy.example.yaml"
REQUIRE_BROWSER = os.environ.get("STEPUP_REQUIRE_BROWSER") == "1"


def _missing(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (STEPUP_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    wanted = os.environ.get("STEPUP_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class SandboxServer:
    url: str
    env: dict[str, str]
    log: Path
    demos: list[subprocess.Popen[str]] = field(default_factory=list)

    def demo(self, *options: str) -> Lines:
        """``stepup demo`` against this server, registering its agent in the same database."""
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "demo", "--server", self.url, *options],
            env=self.env,
            cwd=self.log.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.demos.append(process)
        return Lines(process, "the demo")


def _server_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STEPUP_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "STEPUP_HOST": "127.0.0.1",
            "STEPUP_PORT": str(port),
            "STEPUP_DATABASE_URL": f"sqlite:///{tmp / 'stepup.db'}",
            "STEPUP_KEYS_DIR": str(tmp / "keys"),
            "STEPUP_POLICY_FILE": str(EXAMPLE_POLICY),
        }
    )
    return env


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def sandbox_server(tmp_path: Path) -> Iterator[SandboxServer]:
    if importlib.util.find_spec("bot.sandbox") is None:
        pytest.skip("the sandbox page (bot/sandbox) is not in this tree")
    for _attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        env = _server_env(tmp_path, port)
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve"],
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        if _ready(server, url):
            break
        exited = server.poll() is not None  # e.g. the port was taken: try another
        _stop(server)
        if not exited:
            pytest.fail(f"stepup serve did not answer /healthz in time:\n{log.read_text()}")
    else:
        pytest.fail(f"stepup serve did not start:\n{log.read_text()}")
    running = SandboxServer(url, env, log)
    try:
        page = httpx.get(f"{url}/sandbox", timeout=10)
        if page.status_code != 200:
            pytest.fail(f"/sandbox answered {page.status_code} in sandbox mode:\n{log.read_text()}")
        yield running
    finally:
        for demo in running.demos:
            _stop(demo)
        _stop(server)


def _ready(server: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        _missing("no Chromium found (apt-get install -y chromium, or set STEPUP_CHROMIUM)")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses its own sandbox when run as root (CI is root).
        chromium = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()
