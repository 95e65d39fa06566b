"""``stepup_client`` re-declares the API's enums and fields: they must be those of the live
app's ``/openapi.json``. A status added to core but not to the client fails here."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
import pytest

from stepup_client import StepupClient
from stepup_client.models import (
    ActionClass,
    Approvals,
    ApproverInfo,
    Credential,
    CredentialInfo,
    Outcome,
    Request,
    Status,
)
from tests.integration.conftest import LiveApi

Schema = dict[str, Any]
REQUEST = "/v1/requests/{request_id}"

# Request fields the document has and the client leaves in ``Request.raw``. Exact on purpose:
# a field added to the API fails the test until the client models it or it is listed here.
NOT_MODELLED = {
    Request: {
        "agent",
        "requested_ttl_seconds",
        "data_volume_bytes",
        "on_behalf_of",
        "sponsor_verified",  # the sponsor's standing is for people (docs/identity.md)
        "parent_request_id",
        "break_glass",
        "break_glass_review",
    },
}


@pytest.fixture
def document(live_api: LiveApi) -> Schema:
    answer = httpx.get(f"{live_api.url}/openapi.json")
    assert answer.status_code == 200
    spec: Schema = answer.json()
    return spec


def resolve(document: Schema, schema: Schema) -> Schema:
    """Follow ``$ref``; of ``anyOf [X, null]`` (a nullable value), X."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    assert len(branches) == 1, schema
    found = branches[0]
    while "$ref" in found:
        found = document["components"]["schemas"][found["$ref"].rsplit("/", 1)[1]]
    return found


def nullable(schema: Schema) -> bool:
    return any(branch.get("type") == "null" for branch in schema.get("anyOf", []))


def answer_schema(document: Schema, method: str, path: str, status: str = "200") -> Schema:
    content = document["paths"][path][method]["responses"][status]["content"]
    return resolve(document, content["application/json"]["schema"])


def body_schema(document: Schema, method: str, path: str) -> Schema:
    content = document["paths"][path][method]["requestBody"]["content"]
    return resolve(document, content["application/json"]["schema"])


def enum_values(document: Schema, schema: Schema) -> set[str]:
    return set(resolve(document, schema)["enum"])


def values(enum: type[StrEnum]) -> set[str]:
    return {member.value for member in enum}


def test_client_enums_have_exactly_the_documents_values(document: Schema) -> None:
    request = answer_schema(document, "get", REQUEST)
    since = next(p for p in document["paths"][REQUEST]["get"]["parameters"] if p["name"] == "since")
    assert enum_values(document, request["properties"]["status"]) == values(Status)
    assert enum_values(document, since["schema"]) == values(Status)

    submit = body_schema(document, "post", "/v1/requests")
    assert enum_values(document, submit["properties"]["action_class"]) == values(ActionClass)
    assert enum_values(document, request["properties"]["action_class"]) == values(ActionClass)

    complete = body_schema(document, "post", f"{REQUEST}/complete")
    assert enum_values(document, complete["properties"]["outcome"]) == values(Outcome)
    assert enum_values(document, request["properties"]["outcome"]) == values(Outcome)


def json_type(hint: Any) -> tuple[str, str | None]:
    """The JSON type (and format) a client field's annotation expects."""
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return "string", None
    if hint is datetime:
        return "string", "date-time"
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is Mapping:
        return "object", None
    if typing.get_origin(hint) is tuple:
        return "array", None
    simple = {str: "string", int: "integer", bool: "boolean"}
    return simple[hint], None


def optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        assert len(others) == 1, hint
        return others[0], True
    return hint, False


def assert_client_reads(document: Schema, model: type, schema: Schema) -> None:
    """Every field ``model`` parses exists in ``schema`` with its JSON type; a field the client
    requires (not ``| None``) is required and never null; nothing else is left unread."""
    properties: dict[str, Schema] = schema["properties"]
    hints = typing.get_type_hints(model)
    # raw: the whole JSON; dpop_key: the client's own key a DPoP credential is bound to;
    # claimed: the credential a submit with claim carries, read from ``credential``
    names = {f.name for f in dataclasses.fields(model)} - {"raw", "dpop_key", "claimed"}
    assert properties.keys() - names == NOT_MODELLED.get(model, set()), model.__name__
    assert names <= properties.keys(), model.__name__
    for name in names:
        declared = properties[name]
        hint, may_be_null = optional(hints[name])
        expected_type, expected_format = json_type(hint)
        found = resolve(document, declared)
        assert (found.get("type"), found.get("format")) == (expected_type, expected_format), (
            f"{model.__name__}.{name}"
        )
        if not may_be_null:
            assert name in schema.get("required", []), f"{model.__name__}.{name} may be absent"
            assert not nullable(declared), f"{model.__name__}.{name} may be null"


def test_client_models_read_exactly_the_documents_fields(document: Schema) -> None:
    request = answer_schema(document, "get", REQUEST)
    assert_client_reads(document, Request, request)
    approvals = resolve(document, request["properties"]["approvals"])
    assert_client_reads(document, Approvals, approvals)
    assert_client_reads(
        document, ApproverInfo, resolve(document, approvals["properties"]["approvers"]["items"])
    )
    assert_client_reads(
        document, CredentialInfo, resolve(document, request["properties"]["credential"])
    )
    claim = answer_schema(document, "post", f"{REQUEST}/credential")
    assert_client_reads(document, Credential, claim)


def test_client_submit_sends_exactly_the_documents_body(document: Schema) -> None:
    submit = body_schema(document, "post", "/v1/requests")
    signature = inspect.signature(StepupClient.submit).parameters
    sent = {name: p for name, p in signature.items() if name not in ("self", "idempotency_key")}
    assert sent.keys() == submit["properties"].keys()
    required = {name for name, p in sent.items() if p.default is inspect.Parameter.empty}
    assert required == set(submit["required"])
    headers = {
        p["name"].lower()
        for p in document["paths"]["/v1/requests"]["post"]["parameters"]
        if p["in"] == "header"
    }
    assert "idempotency-key" in headers
