"""A tool call's arguments with the defaults its input schema declares filled in.

The upstream applies a tool's defaults to arguments the model left out; the proxy fills them
first, so the request's ``parameters`` (what approvers see) and the arguments the upstream
receives are the same object. Top-level properties and nested objects (inline, or behind a
local ``$ref``) are filled; anything fancier (``oneOf`` between objects, ``if``/``then``,
``patternProperties``) is left to the upstream.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

_MAX_DEPTH = 16  # a recursive schema (a tree of nodes) is filled this deep, no deeper


def with_defaults(
    schema: Mapping[str, Any] | None, arguments: Mapping[str, Any], *, skip: str | None = None
) -> dict[str, Any]:
    """``arguments`` plus every default the schema gives for a property left out. ``skip``
    (the argument stepup fills with the credential) is never filled."""
    filled = dict(arguments)
    if not isinstance(schema, Mapping):
        return filled
    _fill(schema, schema, filled, skip, 0)
    return filled


def _fill(
    root: Mapping[str, Any],
    schema: Mapping[str, Any],
    value: dict[str, Any],
    skip: str | None,
    depth: int,
) -> None:
    properties = _object_schema(root, schema).get("properties")
    if depth > _MAX_DEPTH or not isinstance(properties, Mapping):
        return
    for name, declared in properties.items():
        if name == skip or not isinstance(name, str) or not isinstance(declared, Mapping):
            continue
        if name not in value:
            default = _default(root, declared)
            if default is _NONE:
                continue
            value[name] = copy.deepcopy(default)
        if isinstance(value[name], dict):
            value[name] = dict(value[name])  # never write into the caller's nested dict
            _fill(root, declared, value[name], None, depth + 1)


_NONE = object()


def _default(root: Mapping[str, Any], declared: Mapping[str, Any]) -> Any:
    target = _resolve(root, declared)
    for schema in (declared, target):
        if "default" in schema:
            default = schema["default"]
            # A default its own type refuses (``x: int = None``) means "absent": sent
            # explicitly, the upstream would reject what it accepts when left out.
            return default if _fits(target, default) and _fits(declared, default) else _NONE
    return _NONE


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _fits(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` has the schema's plain ``type`` (a name or a list of names); a schema
    without one (or with one this does not know) is not judged."""
    declared = schema.get("type")
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not all(name in _JSON_TYPES for name in names):
        return True
    return any(_JSON_TYPES[name](value) for name in names)


def _object_schema(root: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema itself, its ``$ref`` target, its single ``allOf`` member, or the one object
    branch of an ``anyOf`` / ``oneOf`` (``Optional[Model]`` is ``anyOf: [Model, null]``)."""
    schema = _resolve(root, schema)
    if "properties" in schema:
        return schema
    for keyword in ("allOf", "anyOf", "oneOf"):
        branches = schema.get(keyword)
        if not isinstance(branches, list):
            continue
        objects = [
            resolved
            for branch in branches
            if isinstance(branch, Mapping)
            and isinstance((resolved := _resolve(root, branch)).get("properties"), Mapping)
        ]
        if len(objects) == 1:
            return objects[0]
    return schema


def _resolve(root: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A local ``$ref`` (``#/$defs/Name``, ``#/definitions/Name``) followed a few steps."""
    for _ in range(8):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for step in ref[2:].split("/"):
            step = step.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or step not in target:
                return schema
            target = target[step]
        if not isinstance(target, Mapping):
            return schema
        schema = target
    return schema
