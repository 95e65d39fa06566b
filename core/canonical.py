"""Canonical JSON and the digests that bind approvals to exact parameters."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, UTF-8 kept as is: the form that ``parameters_digest`` hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parameters_digest(parameters: Any) -> str:
    """``sha256:`` + hex of the canonical JSON of ``parameters`` (DESIGN §4)."""
    return "sha256:" + hashlib.sha256(canonical_json(parameters).encode("utf-8")).hexdigest()


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
