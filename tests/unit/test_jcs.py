"""``parameters_digest`` is SHA-256 over RFC 8785 (JCS): the RFC's own vectors, the same value
as before for strings, integers and ASCII keys, and the client computing it the same way."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from core.canonical import canonical_digest, canonical_json, jcs, parameters_digest
from core.errors import ValidationFailed
from stepup_client import ParametersNotSerializable
from stepup_client import parameters_digest as client_digest
from stepup_client.digest import canonical_json as client_canonical

# RFC 8785 Appendix B: IEEE 754 bit patterns and their JSON text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]

# RFC 8785 §3.2.2: the sample input and its canonical output.
SECTION_3_2_2_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
SECTION_3_2_2_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)

# RFC 8785 §3.2.3: keys sorted by UTF-16 code units (the emoji's surrogates before U+FB33).
SECTION_3_2_3_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
SECTION_3_2_3_ORDER = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_appendix_b_numbers(bits: str, text: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert jcs(number) == text.encode()
    assert client_canonical(number) == text


def test_section_3_2_2_sample() -> None:
    value = json.loads(SECTION_3_2_2_INPUT)
    assert jcs(value) == SECTION_3_2_2_OUTPUT.encode("utf-8")
    assert client_canonical(value) == SECTION_3_2_2_OUTPUT
    expected = "sha256:" + hashlib.sha256(SECTION_3_2_2_OUTPUT.encode("utf-8")).hexdigest()
    assert parameters_digest(value) == client_digest(value) == expected


def test_section_3_2_3_sorting_with_non_bmp_keys() -> None:
    value = json.loads(SECTION_3_2_3_INPUT)
    assert list(json.loads(jcs(value))) == SECTION_3_2_3_ORDER
    assert list(json.loads(client_canonical(value))) == SECTION_3_2_3_ORDER
    # Python's own sort_keys puts U+1F600 after U+FB33 (code points): the old form differed.
    assert list(json.loads(canonical_json(value)))[-2:] == ["\ufb33", "\U0001f600"]
    assert parameters_digest(value) == client_digest(value)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"replicas": 3, "namespace": "payments", "dry_run": False, "note": None},
        {"b": [1, 2], "a": "é", "z": {"y": -12, "x": '日本 "q" \\ \n\t\u0001'}},
        {"columns": ["id", "name"], "customer": "Zoë ", "database": "orders-db", "limit": 3},
        {"max": 2**53 - 1, "min": -(2**53 - 1), "zero": 0, "emoji": "😀"},
    ],
)
def test_same_digest_as_before_for_strings_integers_and_ascii_keys(value: object) -> None:
    before = "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    assert parameters_digest(value) == before == canonical_digest(value)
    assert client_digest(value) == before


def test_floats_are_well_defined() -> None:
    assert jcs({"a": 1.0, "b": 0.1, "c": -0.0, "d": 1e21}) == b'{"a":1,"b":0.1,"c":0,"d":1e+21}'
    assert parameters_digest({"x": 1.0}) == parameters_digest({"x": 1})


@pytest.mark.parametrize(
    "value",
    [{"n": float("nan")}, {"n": float("inf")}, {"n": 2**53}, {"n": -(2**70)}, {"s": "\ud800"}],
)
def test_what_jcs_cannot_represent_is_refused_by_both(value: object) -> None:
    with pytest.raises(ValidationFailed):
        parameters_digest(value)
    with pytest.raises(ParametersNotSerializable):
        client_digest(value)
