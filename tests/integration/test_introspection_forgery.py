"""Introspection holds a token to what stepup issued under its jti, on SQLite and PostgreSQL.

Someone holding a leaked signing key can sign any claims; a live jti is not hard to come by.
Borrowing one for another agent, scope or audience, or a later expiry, answers
``{"active": false}``: the database's record of the credential decides, not the token.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from core.credentials import CREDENTIAL_TYP
from tests.conftest import T0
from tests.integration.conftest import LiveApi
from tests.support import submit_body


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def introspect(api: LiveApi, key: str, token: str) -> dict[str, Any]:
    with api.client(key) as server:
        answer = server.post("/v1/introspect", data={"token": token})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.mark.parametrize(
    "forged",
    [
        {"scope": "db.drop_database"},
        {"sub": "another-agent"},
        {"aud": "payments-api-admin"},
        {"exp_plus": 3600},
    ],
    ids=["scope", "agent", "audience", "expiry"],
)
def test_a_token_borrowing_a_live_jti_is_inactive(
    live_api: LiveApi, forged: dict[str, Any]
) -> None:
    body = submit_body(action="db.query", action_class="read", target="payments-api")
    with live_api.client() as c:
        created = c.post("/v1/requests", json=body)
        assert created.status_code == 201, created.text
        claimed = c.post(f"/v1/requests/{created.json()['id']}/credential")
        assert claimed.status_code == 200, claimed.text
    token = claimed.json()["token"]
    # A gateway that may ask about both audiences: only the jti's record can tell them apart.
    gateway = live_api.context.registry.add_resource_server(
        "gateway", by="test", now=T0, audiences=["payments-api", "payments-api-admin"]
    )
    assert introspect(live_api, gateway, token)["active"] is True

    claims = claims_of(token)
    if "exp_plus" in forged:
        claims["exp"] += forged["exp_plus"]
    else:
        claims.update(forged)
    forgery = live_api.engine.service.keyring.sign(claims, typ=CREDENTIAL_TYP)
    assert introspect(live_api, gateway, forgery) == {"active": False}
    assert introspect(live_api, gateway, token)["active"] is True  # the real one still is
