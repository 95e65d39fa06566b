from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from core.canonical import canonical_json, json_depth, parameters_digest
from core.durations import format_duration, parse_duration, parse_size


def test_digest_is_sha256_of_sorted_compact_utf8_json() -> None:
    params = {"b": [1, 2], "a": "é"}
    expected = hashlib.sha256('{"a":"é","b":[1,2]}'.encode()).hexdigest()
    assert parameters_digest(params) == "sha256:" + expected
    assert parameters_digest({"a": "é", "b": [1, 2]}) == parameters_digest(params)
    assert parameters_digest({"a": "e", "b": [1, 2]}) != parameters_digest(params)
    assert canonical_json({"z": {"y": 1, "x": None}}) == '{"z":{"x":null,"y":1}}'


def test_depth() -> None:
    assert json_depth(1) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [{"b": 1}]}) == 3
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(40):
        cur["x"] = {}
        cur = cur["x"]  # type: ignore[assignment]
    assert json_depth(deep) == 41


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), (45, 45)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "bad", ["", "10", "10 minutes", "-5m", "0s", "1.5h", True, "1001d", "99999999999d", 10**12]
)
def test_bad_durations(bad: str | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes_and_format() -> None:
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(12) == 12
    with pytest.raises(ValueError):
        parse_size("lots")
    assert format_duration(timedelta(minutes=10)) == "10m"
    assert format_duration(timedelta(seconds=90)) == "90s"
