"""schemathesis against /openapi.json of a running server: no input may cause a 5xx, and
every answer has a documented status, media type, headers and shape.

Bounded: a fixed number of examples per operation (a few hundred cases in all), derandomised
so that a failure reproduces.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.agents import AgentRegistry
from core.storage.database import Database
from core.storage.migrate import upgrade
from tests.integration.live import running
from tests.support import OWNER, build_engine

_KEYS: dict[str, str] = {}
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{tmp / 'fuzz.db'}")
    upgrade(db.engine)
    engine = build_engine(db, tmp)
    registry = AgentRegistry(engine.service)
    now = datetime.now(UTC)
    _KEYS["agent"] = registry.add("fuzz-bot", OWNER, by="test", now=now)
    _KEYS["server"] = registry.add_resource_server("fuzz-target", by="test", now=now)
    with running(create_app(ApiContext(service=engine.service, registry=registry))) as url:
        yield url
    db.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz_operation(op: schemathesis.APIOperation, key: str) -> int:
    """Run the bounded examples of one operation; returns how many calls were made."""
    calls = 0

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        if case.query and "wait" in case.query:
            case.query["wait"] = 1 if str(case.query["wait"]).isdigit() else case.query["wait"]
        response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=10)
        calls += 1
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
        )
        if response.status_code >= 400:
            content_type = response.headers.get("content-type") or [""]
            if case.path == "/v1/token":  # OAuth errors (RFC 6749 §5.2), not problem details
                assert content_type[0].startswith("application/json")
                assert set(response.json()) == {"error", "error_description"}
            else:
                assert content_type[0].startswith("application/problem+json")
        case.validate_response(response, checks=CONFORMANCE)

    check()
    return calls


def test_no_input_causes_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    ops = operations(api_schema)
    assert {op.path for op in ops} >= {
        "/v1/requests",
        "/v1/introspect",
        "/v1/requests/{request_id}/credential",
    }
    calls = sum(
        fuzz_operation(op, _KEYS["server"] if op.path == "/v1/introspect" else _KEYS["agent"])
        for op in ops
    )
    assert 100 <= calls <= 600
