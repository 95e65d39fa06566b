"""Canonical JSON and the digests that bind approvals to exact parameters."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from core.errors import ValidationFailed


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, UTF-8 kept as is: how parameters and audit data are stored.

    Not the digest's form (that is RFC 8785, ``jcs``); kept as is so stored audit entries,
    whose chain hashes cover this text, still verify."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_digest(value: Any) -> str:
    """``sha256:`` + hex of ``canonical_json(value)``: an internal fingerprint (what an
    Idempotency-Key is bound to), never shown to anyone who must recompute it."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def jcs(value: Any) -> bytes:
    """The RFC 8785 (JSON Canonicalization Scheme) bytes of ``value``: keys sorted by UTF-16
    code units, numbers as ECMAScript prints them, UTF-8. ValidationFailed for what JCS cannot
    represent: NaN/Infinity, integers beyond ±(2**53 - 1), lone surrogates, non-JSON types."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"parameters: not representable in canonical JSON: {exc}") from None


def parameters_digest(parameters: Any) -> str:
    """``sha256:`` + hex of the RFC 8785 canonical form of ``parameters``.

    Identical to the earlier ``sha256(canonical_json(...))`` for strings, integers, booleans,
    null and ASCII keys; any JCS implementation in any language gets the same value."""
    return "sha256:" + hashlib.sha256(jcs(parameters)).hexdigest()


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value: scalars are 0, ``{}``/``[]`` 1. Iterative, no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            depth += 1
            stack.extend((v, depth) for v in item.values())
        elif isinstance(item, list):
            depth += 1
            stack.extend((v, depth) for v in item)
        deepest = max(deepest, depth)
    return deepest
