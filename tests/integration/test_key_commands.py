"""`stepup agents rotate-key`, `stepup resource-servers disable` and `rotate-key`, against a
running API on the same database (SQLite and PostgreSQL). The printed keys come from the real
`stepup` command; the other calls run the same commands in-process (a process costs seconds)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app
from core.storage.tables import AuditRow
from tests.integration.conftest import LiveApi
from tests.integration.test_cli_admin import make_cli_env, stepup
from tests.integration.test_introspection_audiences import token_for
from tests.support import submit_body

READ = submit_body(action="db.query", action_class="read")


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``stepup ARGS`` in-process, as ``stepup`` of test_cli_admin runs it in a process."""
    env = make_cli_env(database_url, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no stray .env

    def invoke(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.stderr
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    return invoke


def last_line(stdout: str) -> str:
    return stdout.rstrip("\n").splitlines()[-1]


def agent_status(api: LiveApi, key: str) -> int:
    with api.client(key) as c:
        return c.post("/v1/requests", json=READ).status_code


def introspection(api: LiveApi, server_key: str, token: str) -> httpx.Response:
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {server_key}"}, timeout=30
    ) as server:
        return server.post("/v1/introspect", data={"token": token})


def audited(api: LiveApi, kind: str) -> list[dict[str, object]]:
    with api.engine.db.read() as session:
        rows = session.execute(select(AuditRow).where(AuditRow.kind == kind)).scalars()
        return [json.loads(row.data) | {"actor": row.actor} for row in rows]


def every_audit_text(api: LiveApi) -> str:
    with api.engine.db.read() as session:
        return "\n".join(session.execute(select(AuditRow.data)).scalars())


def test_rotate_an_agent_key_with_the_default_grace_then_with_none(
    live_api: LiveApi, run: Run, database_url: str, tmp_path: Path
) -> None:
    assert run("agents", "list").stdout.rstrip().endswith("\t1 live key\tstatic key (development)")

    rotated = stepup(make_cli_env(database_url, tmp_path), "agents", "rotate-key", "deploy-bot")
    second = last_line(rotated.stdout)
    assert second.startswith("stpa_") and second.strip() == second and " " not in second
    assert "1 old key(s) work until" in rotated.stdout and "(10m)" in rotated.stdout
    assert second not in rotated.stdout.splitlines()[0] and rotated.stderr == ""
    assert run("agents", "list").stdout.rstrip().endswith("\t2 live keys\tstatic key (development)")
    assert agent_status(live_api, live_api.agent_key) == 201  # within its grace
    assert agent_status(live_api, second) == 201

    third = last_line(run("agents", "rotate-key", "deploy-bot", "--grace", "0").stdout)
    assert agent_status(live_api, live_api.agent_key) == 401
    assert agent_status(live_api, second) == 401
    assert agent_status(live_api, third) == 201
    assert run("agents", "list").stdout.rstrip().endswith("\t1 live key\tstatic key (development)")

    assert [(e["old_keys"], e["actor"]) for e in audited(live_api, "agent.key_rotated")] == [
        (1, "cli"),
        (2, "cli"),
    ]
    text = every_audit_text(live_api)
    assert second not in text and third not in text
    assert run("audit", "verify").returncode == 0  # the new kinds keep the chain verifiable


def test_bad_rotations_say_why_and_change_nothing(live_api: LiveApi, run: Run) -> None:
    for args, words in [
        (("deploy-bot", "--grace", "soon"), "--grace: 'soon' is not a duration"),
        (("deploy-bot", "--grace", "25h"), "grace: from 0s to 1d"),
        (("nobody",), "no agent nobody"),
    ]:
        refused = run("agents", "rotate-key", *args, ok=False)
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
        assert refused.stdout == ""
    assert run("agents", "list").stdout.rstrip().endswith("\t1 live key\tstatic key (development)")
    assert audited(live_api, "agent.key_rotated") == []


def test_a_disabled_resource_server_gets_401(live_api: LiveApi, run: Run) -> None:
    token = token_for(live_api, "payments-api")
    assert introspection(live_api, live_api.server_key, token).json()["active"] is True

    done = run("resource-servers", "disable", "payments-api")
    assert done.stdout.strip() == "resource server payments-api disabled"
    refused = introspection(live_api, live_api.server_key, token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"] == "invalid or missing credentials"
    assert "payments-api\tpayments-api\tdisabled" in run("resource-servers", "list").stdout

    again = run("resource-servers", "disable", "payments-api")
    assert "already disabled" in again.stdout
    no_key = run("resource-servers", "rotate-key", "payments-api", ok=False)
    assert no_key.returncode == 1 and "is disabled" in no_key.stderr and no_key.stdout == ""
    assert introspection(live_api, live_api.server_key, token).status_code == 401
    assert audited(live_api, "resource_server.disabled") == [
        {"name": "payments-api", "actor": "cli"}
    ]
    assert audited(live_api, "resource_server.key_rotated") == []
    missing = run("resource-servers", "disable", "nowhere", ok=False)
    assert missing.returncode == 1 and "no resource server nowhere" in missing.stderr
    assert run("audit", "verify").returncode == 0


def test_a_rotated_resource_server_key_replaces_the_old_one_at_once(
    live_api: LiveApi, database_url: str, tmp_path: Path
) -> None:
    env = make_cli_env(database_url, tmp_path)
    token = token_for(live_api, "payments-api")
    rotated = stepup(env, "resource-servers", "rotate-key", "payments-api")  # the real command
    new_key = last_line(rotated.stdout)
    assert new_key.startswith("stpr_") and new_key != live_api.server_key
    assert new_key not in rotated.stdout.splitlines()[0]

    old = introspection(live_api, live_api.server_key, token)
    assert old.status_code == 401 and old.json()["detail"] == "invalid or missing credentials"
    fresh = introspection(live_api, new_key, token).json()
    assert fresh["active"] is True and fresh["aud"] == "payments-api"
    assert audited(live_api, "resource_server.key_rotated") == [
        {"name": "payments-api", "actor": "cli"}
    ]
    assert new_key not in every_audit_text(live_api)
