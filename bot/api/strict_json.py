"""The API's one JSON parser: what RFC 8259 leaves open or Python's ``json`` lets through is
refused, for every JSON body (``StrictJsonRoute``), before any model or use case sees it.

Refused: ``NaN``/``Infinity``/``-Infinity`` and numbers that overflow to them (``1e400``),
integers longer than any 64-bit one (a 5,000-digit integer never reaches ``int``; the body
models bound the rest by field, ``parameters`` included), duplicate object keys at any depth,
lone surrogates (``"\\ud800"``), and bodies that are not UTF-8. One ``json.loads`` with hooks;
strings are walked for surrogates only when the body has a ``\\uD8..``-``\\uDF..`` escape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

_INT_DIGITS = len(str(-(2**63)))  # sign and 19 digits
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class StrictJsonError(json.JSONDecodeError):
    """A body JSON's grammar allows but this API refuses. A ``JSONDecodeError``, so FastAPI
    answers it as it answers malformed JSON (a 422 whose ``ctx.error`` is ``msg``)."""

    def __init__(self, msg: str, doc: str = "", pos: int = 0) -> None:
        super().__init__(msg, doc, pos)


def _shown(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:24]}…"


def _constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    """Longer than any 64-bit integer: refused unread. Shorter ones out of range are left to
    the body model, which names the field (``core/inputs.py`` bounds ``parameters`` too)."""
    if len(text) <= _INT_DIGITS:
        return int(text)
    raise StrictJsonError(f"integer {_shown(text)} is beyond the 64-bit range (±2**63)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"number {_shown(text)} is out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(f"duplicate key {_shown(key)!r}")
            seen.add(key)
    return result


def _refuse_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                raise StrictJsonError(
                    f"lone surrogate \\u{ord(found.group()):04x} in a string (not Unicode text)"
                )
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def strict_loads(body: bytes | str) -> Any:
    """Parse a JSON body or raise StrictJsonError (a ``json.JSONDecodeError``) naming why."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJsonError(f"body is not UTF-8 (byte {exc.start})") from None
    else:
        text = body
    value = json.loads(
        text,
        parse_constant=_constant,
        parse_int=_int,
        parse_float=_float,
        object_pairs_hook=_object,
    )
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value)
    return value


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Every JSON body of the route is parsed by ``strict_loads``; the body model (and so the
    OpenAPI document) is unchanged."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
