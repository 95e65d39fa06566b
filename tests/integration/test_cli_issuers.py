"""``stepup issuers list`` and ``stepup issuers check``: each issuer reached and its permission
checked without issuing anything; a failure is one line naming why (never a secret), exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
import responses
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bot.cli import app
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _postgres_unavailable

BROKER = "https://broker.test/stepup"
POLICY = f"""\
version: 1
issuers:
  broker: {{type: http, url: "{BROKER}", retries: 0}}
  vault:
    type: vault
    url: https://vault.test
    token_env: STEPUP_TEST_VAULT_TOKEN_UNSET
  orders-db: {{type: postgres, admin_dsn_env: STEPUP_TEST_ORDERS_ADMIN_DSN}}
rules:
  - name: through-broker
    match: {{action: db.query}}
    decision: allow
    issuer: broker
    grant: {{role: reader}}
  - name: jwt
    match: {{action: k8s.get}}
    decision: allow
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    monkeypatch.delenv("STEPUP_TEST_VAULT_TOKEN_UNSET", raising=False)
    return {
        "STEPUP_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(policy),
    }


def stepup(env: dict[str, str], *args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_list_names_each_issuer_its_type_and_the_rules_using_it(env: dict[str, str]) -> None:
    out, _ = stepup(env, "issuers", "list", "--json")
    assert json.loads(out) == [
        {"name": "broker", "type": "http", "rules": ["through-broker"]},
        {"name": "orders-db", "type": "postgres", "rules": []},
        {"name": "vault", "type": "vault", "rules": []},
    ]


@responses.activate
def test_check_reaches_the_broker_with_a_signed_check_and_issues_nothing(
    env: dict[str, str],
) -> None:
    seen: list[dict[str, object]] = []

    def answer(request: responses.PreparedRequest) -> tuple[int, dict[str, str], str]:
        seen.append(jwt.decode(request.body, options={"verify_signature": False}))
        return 200, {}, "{}"

    responses.add_callback(responses.POST, BROKER, callback=answer)
    out, _ = stepup(env, "issuers", "check", "broker")
    assert out.startswith("broker (http): ok")
    assert [claims["op"] for claims in seen] == ["check"]


@responses.activate
def test_a_failing_issuer_is_one_line_and_exit_1_and_the_others_are_still_checked(
    env: dict[str, str],
) -> None:
    responses.add(responses.POST, BROKER, status=503)
    out, err = stepup(env, "issuers", "check", "broker", "vault", code=1)
    lines = out.splitlines()
    assert lines[0].startswith("broker (http): FAILED") and "503" in lines[0]
    assert lines[1].startswith("vault (vault): FAILED")
    assert "STEPUP_TEST_VAULT_TOKEN_UNSET" in lines[1]
    assert "2 of 2 issuers failed" in err


def test_an_unknown_name_is_refused_naming_the_known_ones(env: dict[str, str]) -> None:
    _, err = stepup(env, "issuers", "check", "nope", code=1)
    assert "no issuer named nope" in err and "broker, orders-db, vault" in err


def test_a_policy_without_issuers_says_every_rule_issues_the_jwt(
    env: dict[str, str], tmp_path: Path
) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\nrules: []\n")
    out, _ = stepup(env, "issuers", "check", "--policy", str(plain))
    assert "no issuers" in out


@pytest.mark.postgres
def test_check_postgres_says_the_admin_may_create_roles_and_refuses_one_that_cannot(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = _postgres_unavailable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    monkeypatch.setenv("STEPUP_TEST_ORDERS_ADMIN_DSN", url.render_as_string(hide_password=False))
    out, _ = stepup(env, "issuers", "check", "orders-db")
    assert out.startswith("orders-db (postgres): ok") and "create roles" in out

    weak = f"stepup_cli_weak_{abs(hash(env['STEPUP_KEYS_DIR'])) % 10**8}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{weak}" LOGIN NOCREATEROLE'))
        monkeypatch.setenv(
            "STEPUP_TEST_ORDERS_ADMIN_DSN",
            url.set(username=weak).render_as_string(hide_password=False),
        )
        out, _ = stepup(env, "issuers", "check", "orders-db", code=1)
        assert out.startswith("orders-db (postgres): FAILED")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{weak}"'))
        admin.dispose()
