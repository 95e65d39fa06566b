"""Strict input over real HTTP, on SQLite and PostgreSQL: what JSON's grammar or Python's parser
lets through (NaN, Infinity, duplicate keys, lone surrogates, unbounded integers, control
characters) is refused with a 422 naming the problem, before anything is written."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from core.storage.tables import AuditRow, OutboxRow, RequestRow
from tests.integration.conftest import LiveApi
from tests.support import submit_body

BODY = submit_body()  # needs approval: a request, audit entries and a Slack card if accepted
JSON = {"content-type": "application/json"}


def written(api: LiveApi) -> tuple[int, int, int]:
    with api.engine.db.read() as session:
        return tuple(  # type: ignore[return-value]
            int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (RequestRow, AuditRow, OutboxRow)
        )


def refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, detail
    return detail


def raw(body: dict[str, object], **replace: str) -> str:
    """``body`` as JSON text with each ``"@name@"`` placeholder value replaced by raw text."""
    text = json.dumps(body)
    for name, value in replace.items():
        text = text.replace(f'"@{name}@"', value)
    return text


ATTACKS = {
    "nan": (raw(BODY | {"parameters": {"replicas": "@x@"}}, x="NaN"), "NaN"),
    "infinity": (raw(BODY | {"parameters": {"replicas": "@x@"}}, x="Infinity"), "Infinity"),
    "-infinity": (raw(BODY | {"parameters": {"n": ["@x@"]}}, x="-Infinity"), "-Infinity"),
    "float overflow": (raw(BODY | {"parameters": {"n": "@x@"}}, x="1e400"), "1e400"),
    "nan at top": (raw(BODY | {"data_volume_bytes": "@x@"}, x="NaN"), "NaN"),
    "duplicate key": (json.dumps(BODY)[:-1] + ', "target": "other"}', "duplicate", "target"),
    "nested duplicate": (
        raw(BODY | {"parameters": {"a": [{"b": "@x@"}]}}, x='{"k": 1, "k": 2}'),
        "duplicate",
        "'k'",
    ),
    "lone surrogate": (raw(BODY | {"justification": "@x@"}, x='"fix \\ud800"'), "surrogate"),
    "low surrogate key": (
        raw(BODY | {"parameters": {"x": "@x@"}}, x='{"\\udc00": 1}'),
        "surrogate",
    ),
    "reversed pair": (
        raw(BODY | {"parameters": {"x": "@x@"}}, x='"\\ude00\\ud83d"'),
        "surrogate",
    ),
    "huge integer": (raw(BODY | {"parameters": {"n": "@x@"}}, x=str(2**63)), "integer"),
    "huge negative": (raw(BODY | {"parameters": {"n": "@x@"}}, x=str(-(2**63) - 1)), "integer"),
    "5000 digits": (raw(BODY | {"parameters": {"n": "@x@"}}, x="9" * 5000), "integer"),
    "not utf-8": (json.dumps(BODY).replace("INC-42", "INC-\udcff"), "UTF-8"),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_refused_json_writes_nothing_and_retries_stay_422(live_api: LiveApi, attack: str) -> None:
    text, *words = ATTACKS[attack]
    content = text.encode("utf-8", "surrogateescape")
    before = written(live_api)
    with live_api.client() as c:
        refused(c.post("/v1/requests", content=content, headers=JSON), *words)
        for _ in range(2):  # the same Idempotency-Key: 422 each time, never a 500
            retry = c.post("/v1/requests", content=content, headers=JSON | {"Idempotency-Key": "k"})
            refused(retry, *words)
    assert written(live_api) == before


IDENTIFIERS = ("action", "target", "environment", "on_behalf_of", "parent_request_id")
CONTROLS = ("\x00", "\x1b[2J", "\x07", "\x7f", "\x85", "\x9b31m", "\n", "\t", "\r")


@pytest.mark.parametrize("field", [*IDENTIFIERS, "justification"])
def test_control_characters_are_refused_naming_the_field(live_api: LiveApi, field: str) -> None:
    base = "agent@example.com" if field == "on_behalf_of" else "x"
    before = written(live_api)
    with live_api.client() as c:
        for control in CONTROLS:
            if field == "justification" and control in "\n\t":
                continue
            value = base.replace("@", f"{control}@") if "@" in base else f"{base}{control}y"
            body = BODY | {field: value}
            refused(c.post("/v1/requests", json=body), field, "control character")
            again = c.post("/v1/requests", json=body, headers={"Idempotency-Key": f"c-{field}"})
            refused(again, field)
    assert written(live_api) == before


def test_what_stays_allowed(live_api: LiveApi) -> None:
    body = BODY | {
        "justification": "line one\n\tline two ünïcödé 😀",
        "parameters": {"max": 2**53 - 1, "min": -(2**53 - 1), "f": 1.5, "e": "\U0001f600"},
        "data_volume_bytes": 2**63 - 1,
    }
    text = json.dumps(body).replace("\\ud83d\\ude00", "\\uD83D\\uDE00")  # an escaped pair
    with live_api.client() as c:
        created = c.post("/v1/requests", content=text, headers=JSON)
        assert created.status_code == 201, created.text
        answer = created.json()
    assert answer["justification"] == body["justification"]
    assert answer["parameters"] == body["parameters"]


def test_complete_and_introspect_use_the_same_parser(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=submit_body(action_class="read", action="db.query"))
        assert req.status_code == 201, req.text
        rid = req.json()["id"]
        assert c.post(f"/v1/requests/{rid}/credential").status_code == 200
        complete = f"/v1/requests/{rid}/complete"
        before = written(live_api)
        refused(c.post(complete, json={"outcome": "succeeded", "detail": "ok\x00"}), "detail")
        refused(
            c.post(complete, json={"outcome": "succeeded", "detail": "\x1b]8;;x\x07"}), "detail"
        )
        dup = '{"outcome": "succeeded", "outcome": "failed"}'
        refused(c.post(complete, content=dup, headers=JSON), "duplicate", "outcome")
        refused(c.post(complete, content='{"outcome": NaN}', headers=JSON), "NaN")
        assert written(live_api) == before
        done = c.post(complete, json={"outcome": "succeeded", "detail": "done\n\tall well"})
        assert done.status_code == 200, done.text
    with live_api.client(live_api.server_key) as c:
        dup = '{"token": "a", "token": "b"}'
        refused(c.post("/v1/introspect", content=dup, headers=JSON), "duplicate", "token")
        refused(c.post("/v1/introspect", content='{"token": Infinity}', headers=JSON), "Infinity")
        lone = '{"token": "\\ud800"}'
        refused(c.post("/v1/introspect", content=lone, headers=JSON), "surrogate")


def test_nul_in_a_path_is_not_a_server_error(live_api: LiveApi) -> None:
    with live_api.client() as c:
        for path in ("/v1/requests/req_%00x", "/v1/requests/req_%00x/credential"):
            answer = c.get(path) if path.count("/") == 3 else c.post(path)
            assert answer.status_code in (404, 422), answer.text


def test_every_route_of_the_api_parses_strictly() -> None:
    from bot.api.routes import router
    from bot.api.strict_json import StrictJsonRoute

    assert router.route_class is StrictJsonRoute
    assert all(isinstance(route, StrictJsonRoute) for route in router.routes)
