"""Filling a grant template from a request: each substituted value must match the issuer's
safe pattern as a whole; what the policy's author wrote around it is kept."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core.issuers.base import GrantRefused
from core.issuers.grants import fill, placeholders

SAFE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
VALUES = {
    "target": "orders",
    "action": "db.query",
    "environment": "prod",
    "agent": "bot",
    "request_id": "req_1",
}


def filled(template: Any, **parameters: Any) -> Any:
    return fill(template, VALUES, parameters, safe=SAFE, safe_text="an identifier", issuer_type="t")


def test_placeholders_are_filled_in_nested_values_and_literals_are_kept() -> None:
    template = {
        "member_of": ["{target}_reader", "audit"],
        "tables": {"sales.items": ["{parameters.verb}"]},
        "limit": 3,
    }
    assert filled(template, verb="select") == {
        "member_of": ["orders_reader", "audit"],
        "tables": {"sales.items": ["select"]},
        "limit": 3,
    }


@pytest.mark.parametrize(
    "value",
    ["x; drop role postgres", 'x"', "x'", "a*", "../etc", "A B", "", "x\ny", "\u0430dmin"],
)
def test_an_unsafe_value_is_refused_naming_the_requests_field(value: str) -> None:
    with pytest.raises(GrantRefused) as caught:
        filled({"member_of": ["{parameters.role}"]}, role=value)
    assert caught.value.field == "parameters.role"
    assert value not in caught.value.detail or value == ""  # the agent's text is not echoed


def test_the_requests_own_fields_are_held_to_the_pattern_too() -> None:
    with pytest.raises(GrantRefused) as caught:
        fill(
            {"role": "{target}"},
            VALUES | {"target": "orders-db"},
            {},
            safe=SAFE,
            safe_text="an identifier",
            issuer_type="t",
        )
    assert caught.value.field == "target"


@pytest.mark.parametrize(("value", "why"), [(None, "missing"), (True, "string or an integer")])
def test_missing_or_non_text_parameters_are_refused(value: Any, why: str) -> None:
    parameters = {} if value is None else {"role": value}
    with pytest.raises(GrantRefused, match=why):
        filled({"role": "{parameters.role}"}, **parameters)


def test_an_integer_parameter_is_used_as_text() -> None:
    digits = re.compile(r"[0-9]+")
    assert fill(
        {"role": "r{parameters.n}"}, VALUES, {"n": 7}, safe=digits, safe_text="d", issuer_type="t"
    ) == {"role": "r7"}


def test_a_value_that_looks_like_a_placeholder_is_not_filled_again() -> None:
    """Substitution is one pass: a value holding ``{target}`` is refused by the pattern, and
    even where braces were allowed it would not be expanded."""
    braces = re.compile(r"[{}a-z]+")
    assert fill(
        {"r": "{parameters.p}"},
        VALUES,
        {"p": "{target}"},
        safe=braces,
        safe_text="x",
        issuer_type="t",
    ) == {"r": "{target}"}


def test_a_key_is_filled_and_held_to_the_pattern_like_a_value() -> None:
    template = {"tables": {"{parameters.table}": ["SELECT"], "audit": ["SELECT"]}}
    assert filled(template, table="orders") == {
        "tables": {"orders": ["SELECT"], "audit": ["SELECT"]}
    }
    with pytest.raises(GrantRefused) as caught:
        filled(template, table="orders; drop table audit")
    assert caught.value.field == "parameters.table"
    with pytest.raises(GrantRefused, match="a key given twice"):
        filled(template, table="audit")


def test_placeholders_lists_where_each_one_is() -> None:
    assert placeholders({"a": ["{target}", "x{parameters.y}"]}) == [
        ("grant.a[0]", "target"),
        ("grant.a[1]", "parameters.y"),
    ]
