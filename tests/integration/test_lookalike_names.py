"""Look-alike names over real HTTP, on SQLite and PostgreSQL: a variant of ``payments-db``
(another script, fullwidth, invisible, spaced, another hyphen, another case) never gets a
weaker decision than ``payments-db`` itself. It is refused (422 naming the field) or, when it
is the same name in canonical form, denied by the deny rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.storage.database import Database
from core.storage.tables import RequestRow
from tests.conftest import T0
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine, submit_body

POLICY = """\
version: 1
rules:
  - name: hands-off-payments
    match: { target: "payments-*" }
    decision: deny
    reason: payments systems are never touched by agents
  - name: no-production-secrets
    match: { environment: production, action: "vault.*" }
    decision: deny
  - name: anything-else
    match: { action_class: [read, write, destructive, secret_read] }
    decision: allow
"""
BODY = submit_body(action="db.query", action_class="read", environment="staging")

REFUSED = {
    "cyrillic a": "p\u0430yments-db",
    "zero-width space": "pay\u200bments-db",
    "leading space": " payments-db",
    "trailing space": "payments-db ",
    "non-breaking hyphen": "payments\u2011db",
    "no-break space": "payments\u00a0db",
    "right-to-left override": "\u202ebd-stnemyap",
}
DENIED = {  # the same name once canonical: NFKC, letter case ignored by the policy
    "upper case": ("PAYMENTS-DB", "PAYMENTS-DB"),
    "mixed case": ("Payments-Db", "Payments-Db"),
    "fullwidth": ("\uff50\uff41\uff59\uff4d\uff45\uff4e\uff54\uff53-db", "payments-db"),
    "fullwidth upper": ("\uff30\uff21\uff39\uff2d\uff25\uff2e\uff34\uff33-db", "PAYMENTS-db"),
}


@pytest.fixture
def api(db: Database, tmp_path: Path) -> Iterator[tuple[str, Engine, str]]:
    engine = build_engine(db, tmp_path, POLICY)
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=T0)
    context = ApiContext(service=engine.service, registry=engine.registry)
    with running(create_app(context)) as url:
        yield url, engine, key


def client(api: tuple[str, Engine, str]) -> httpx.Client:
    url, _, key = api
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def stored_requests(engine: Engine) -> int:
    with engine.db.read() as session:
        return int(session.execute(select(func.count()).select_from(RequestRow)).scalar_one())


def test_the_name_itself_is_denied_and_another_is_allowed(api: tuple[str, Engine, str]) -> None:
    with client(api) as c:
        denied = c.post("/v1/requests", json=BODY | {"target": "payments-db"})
        allowed = c.post("/v1/requests", json=BODY | {"target": "orders-db"})
    assert denied.status_code == 201 and denied.json()["status"] == "denied", denied.text
    assert denied.json()["rule"] == "hands-off-payments"
    assert allowed.status_code == 201 and allowed.json()["status"] == "approved", allowed.text


@pytest.mark.parametrize("variant", REFUSED, ids=list(REFUSED))
def test_a_lookalike_target_is_refused_naming_the_field(
    api: tuple[str, Engine, str], variant: str
) -> None:
    value = REFUSED[variant]
    with client(api) as c:
        answer = c.post("/v1/requests", json=BODY | {"target": value})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    detail = answer.json()["detail"]
    assert "target" in detail and "U+" in detail, detail
    assert stored_requests(api[1]) == 0


@pytest.mark.parametrize("variant", DENIED, ids=list(DENIED))
def test_a_variant_of_the_same_name_is_denied_and_recorded_as_sent(
    api: tuple[str, Engine, str], variant: str
) -> None:
    sent, kept = DENIED[variant]
    with client(api) as c:
        answer = c.post("/v1/requests", json=BODY | {"target": sent})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert (body["status"], body["rule"]) == ("denied", "hands-off-payments")
        assert body["target"] == kept  # NFKC applied, letter case kept as sent
        assert c.get(f"/v1/requests/{body['id']}").json()["target"] == kept


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("environment", "PRODUCTION"),
        ("environment", "\uff30roduction"),
        ("action", "Vault.Read"),
        ("action", "VAULT.read"),
    ],
)
def test_indexed_fields_ignore_letter_case_too(
    api: tuple[str, Engine, str], field: str, value: str
) -> None:
    body = BODY | {"action": "vault.read", "environment": "production", "target": "kv"}
    with client(api) as c:
        plain = c.post("/v1/requests", json=body).json()
        variant = c.post("/v1/requests", json=body | {field: value}).json()
    assert (plain["status"], plain["rule"]) == ("denied", "no-production-secrets")
    assert (variant["status"], variant["rule"]) == ("denied", "no-production-secrets"), variant


@pytest.mark.parametrize("field", ["action", "environment"])
def test_lookalikes_in_other_names_are_refused(api: tuple[str, Engine, str], field: str) -> None:
    with client(api) as c:
        answer = c.post("/v1/requests", json=BODY | {field: "db\u2027query"})  # a hyphenation point
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]
    assert stored_requests(api[1]) == 0
