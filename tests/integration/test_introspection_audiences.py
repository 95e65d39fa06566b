"""Introspection is bound to its caller: a resource server learns only of tokens meant for it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from core.agents import AgentRegistry
from core.storage.database import Database
from core.storage.migrate import upgrade
from tests.conftest import T0
from tests.integration.conftest import LiveApi
from tests.integration.test_cli_admin import make_cli_env, stepup
from tests.support import submit_body

READ = submit_body(action="db.query", action_class="read", parameters={"order": 42})


def token_for(api: LiveApi, target: str) -> str:
    with api.client() as agent:
        created = agent.post("/v1/requests", json=READ | {"target": target})
        assert created.status_code == 201 and created.json()["status"] == "approved", created.text
        claim = agent.post(f"/v1/requests/{created.json()['id']}/credential")
        assert claim.status_code == 200, claim.text
        return str(claim.json()["token"])


def introspect(api: LiveApi, server_key: str, token: str) -> dict[str, object]:
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {server_key}"}, timeout=30
    ) as server:
        answer = server.post("/v1/introspect", data={"token": token})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


def test_a_server_is_told_only_of_tokens_meant_for_it(live_api: LiveApi) -> None:
    registry: AgentRegistry = live_api.context.registry
    ledger_key = registry.add_resource_server("ledger", by="test", now=T0)
    for_payments = token_for(live_api, "payments-api")
    for_ledger = token_for(live_api, "ledger")

    # A token for B, asked about by A: exactly what an unknown token gets.
    assert introspect(live_api, live_api.server_key, for_ledger) == {"active": False}
    assert introspect(live_api, ledger_key, for_payments) == {"active": False}
    # Each server gets its own tokens, with every claim.
    mine = introspect(live_api, live_api.server_key, for_payments)
    assert mine["active"] is True and mine["aud"] == "payments-api"
    assert mine["scope"] == "db.query" and mine["sub"] == "deploy-bot" and mine["jti"]
    theirs = introspect(live_api, ledger_key, for_ledger)
    assert theirs["active"] is True and theirs["aud"] == "ledger"
    # The in-process service, trusted with every token, still answers for any audience.
    assert live_api.engine.service.introspect(for_ledger, now=datetime.now(UTC))["active"] is True


def test_audiences_given_at_registration(live_api: LiveApi) -> None:
    registry: AgentRegistry = live_api.context.registry
    gateway_key = registry.add_resource_server(
        "gateway", by="test", now=T0, audiences=["orders", "refunds"]
    )
    assert {s.name: s.audiences for s in registry.list_resource_servers()} == {
        "gateway": ("orders", "refunds"),
        "payments-api": ("payments-api",),
    }
    assert introspect(live_api, gateway_key, token_for(live_api, "orders"))["active"] is True
    assert introspect(live_api, gateway_key, token_for(live_api, "refunds"))["active"] is True
    # Its audiences are those given: its own name is not one of them unless named.
    assert introspect(live_api, gateway_key, token_for(live_api, "gateway")) == {"active": False}
    assert introspect(live_api, gateway_key, token_for(live_api, "payments-api")) == {
        "active": False
    }


def test_the_cli_registers_and_lists_audiences(database_url: str, tmp_path: Path) -> None:
    cli_env = make_cli_env(database_url, tmp_path)
    plain = stepup(cli_env, "resource-servers", "add", "payments-api").stdout
    assert "(audiences: payments-api)" in plain
    multi = stepup(
        cli_env,
        "resource-servers",
        "add",
        "gateway",
        "--audience",
        "orders",
        "--audience",
        "refunds",
    ).stdout
    assert "(audiences: orders, refunds)" in multi
    assert multi.strip().splitlines()[-1].startswith("stpr_")
    listed = stepup(cli_env, "resource-servers", "list").stdout.splitlines()
    assert [line.split("\t")[:3] for line in listed] == [
        ["NAME", "AUDIENCES", "STATE"],
        ["gateway", "orders,refunds", "active"],
        ["payments-api", "payments-api", "active"],
    ]
    assert "stpr_" not in "\n".join(listed)
    blank = stepup(cli_env, "resource-servers", "add", "x", "--audience", " ", ok=False)
    assert blank.returncode == 1 and "audience" in blank.stderr


def test_the_migration_gives_existing_servers_their_name(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(db.engine, "0003")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "insert into resource_servers (name, key_hash, created_at, disabled) "
                "values ('payments-api', 'h1', '2026-01-01 00:00:00.000000', 0), "
                "('ledger', 'h2', '2026-01-01 00:00:00.000000', 0)"
            )
        )
    upgrade(db.engine)
    with db.engine.connect() as conn:
        rows = conn.execute(text("select name, audiences from resource_servers order by name"))
        assert rows.all() == [("ledger", '["ledger"]'), ("payments-api", '["payments-api"]')]
    db.dispose()
