"""``stepup demo`` against a live API on the example policy, approvals given by the test through
the service (as the Slack layer records them), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.cli import app
from core.agents import AgentRegistry
from core.model import Approver, Status, Vote
from core.storage.database import Database
from tests.integration.live import running
from tests.processes import Lines
from tests.support import Engine, build_engine

EXAMPLE_POLICY = Path(__file__).parents[2] / "manifests" / "policy.example.yaml"
ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")
STATUS_LINE = re.compile(r"^   (req_\w+) (\w+)")


@dataclass
class ExampleApi:
    url: str
    engine: Engine
    env: dict[str, str]  # the settings of the service's database, keys and policy


@pytest.fixture
def example_api(db: Database, database_url: str, tmp_path: Path) -> Iterator[ExampleApi]:
    engine = build_engine(db, tmp_path, policy=EXAMPLE_POLICY.read_text())
    context = ApiContext(service=engine.service, registry=engine.registry)
    env = {
        "STEPUP_DATABASE_URL": database_url,
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(engine.policy_path),
    }
    with running(create_app(context)) as url:
        yield ExampleApi(url, engine, env)


def _statuses(output: str) -> list[list[str]]:
    """The statuses printed for each numbered step, in order."""
    steps: list[list[str]] = []
    for line in output.splitlines():
        if re.match(r"^\d\. ", line):
            steps.append([])
        elif (match := STATUS_LINE.match(line)) and steps:
            steps[-1].append(match.group(2))
    return steps


def _now() -> datetime:
    return datetime.now(UTC)


def _demo(api: ExampleApi, cwd: Path, *options: str) -> tuple[subprocess.Popen[str], Lines]:
    """``stepup demo`` in a process of its own, with the service's settings (no key given)."""
    env = {**os.environ, **api.env, "PYTHONUNBUFFERED": "1"}
    env.pop("STEPUP_AGENT_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "demo", "--server", api.url, *options],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, Lines(process, "the demo")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_demo_registers_itself_and_goes_on_once_two_people_approve(
    example_api: ExampleApi, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    demo, lines = _demo(example_api, tmp_path, "--timeout", "60", "--pause", "0")
    processes.append(demo)
    pending = lines.until(r"(req_\w+) pending \(rule prod-destructive\) approvals 0/2").group(1)
    service = example_api.engine.service
    first = service.vote(pending, ALICE, Vote.APPROVE, now=_now(), confirmation="payments-api")
    assert first.snapshot.status is Status.PENDING
    lines.until(rf"{pending} pending approvals 1/2")
    service.vote(pending, BOB, Vote.APPROVE, now=_now(), confirmation="payments-api")
    lines.until(r"^done: ")
    assert demo.wait(timeout=30) == 0
    output = lines.text
    assert "registering agent demo-agent" in output
    assert _statuses(output) == [
        ["approved", "active", "completed"],
        ["denied"],
        ["approved", "active", "completed"],
        ["pending", "pending", "approved", "active", "completed"],
    ]
    assert "denied (rule never-drop-prod-db) - Dropping a production database" in output
    assert "break-glass: granted now, reviewed after" in output
    assert output.count("signature and arguments digest checked") == 3
    assert "done: 3 completed, 1 denied" in output
    final = service.get(pending)
    assert final.status is Status.COMPLETED
    assert final.agent_id == "demo-agent"
    assert {a.slack_user_id for a in final.approvals} == {"U0ALICE", "U0BOB"}


def test_ctrl_c_cancels_the_request_waiting_for_approvers(
    example_api: ExampleApi, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    demo, lines = _demo(example_api, tmp_path, "--pause", "0")
    processes.append(demo)
    pending = lines.until(r"(req_\w+) pending \(rule prod-destructive\)").group(1)
    lines.until(r"waiting for approvers: ")
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=30) == 130
    lines.until(rf"^{pending} cancelled$")
    assert "interrupted" in lines.text
    assert example_api.engine.service.get(pending).status is Status.CANCELLED


def test_ctrl_c_while_the_agent_works_reports_aborted_and_revokes(
    example_api: ExampleApi, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    demo, lines = _demo(example_api, tmp_path, "--pause", "60")
    processes.append(demo)
    active = lines.until(r"(req_\w+) active credential expires").group(1)
    lines.until(r"using it: token for db.query on orders-db")
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=30) == 130
    lines.until(rf"^{active} completed \(aborted\), its credential revoked$")
    final = example_api.engine.service.get(active)
    assert (final.status, final.outcome) == (Status.COMPLETED, "aborted")
    assert final.credential is not None
    assert final.credential.revoked_at is not None


def test_demo_cancels_what_is_still_pending_when_its_wait_runs_out(
    example_api: ExampleApi,
) -> None:
    key = AgentRegistry(example_api.engine.service).add(
        "demo-agent", "demo-owner@example.com", by="test", now=_now()
    )
    result = CliRunner().invoke(
        app,
        ["demo", "--server", example_api.url, "--timeout", "1", "--pause", "0"],
        env={"STEPUP_AGENT_KEY": key},
    )
    assert result.exit_code == 1, result.output
    match = re.search(r"(req_\w+) cancelled: still pending after 1s", result.output)
    assert match, result.output
    assert "error: gave up waiting for a decision" in result.output
    assert example_api.engine.service.get(match.group(1)).status is Status.CANCELLED


def test_demo_refuses_a_key_the_server_does_not_know(example_api: ExampleApi) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--server", example_api.url, "--key", "stpa_not-a-key"]
    )
    assert result.exit_code == 1
    assert "refused the agent key (401)" in result.output
    assert "1." not in result.output  # nothing was submitted
