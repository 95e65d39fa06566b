"""A rule's ``grant:`` template, filled from the request at submission (docs/issuers.md).

Placeholders: ``{target}``, ``{action}``, ``{environment}``, ``{agent}``, ``{request_id}`` and
``{parameters.NAME}``. Every value substituted comes from the agent, so each one must match the
issuer's safe pattern as a whole (no quote, wildcard, separator or path step that could widen
an SQL statement, an ARN or a path); what the policy author wrote around it is trusted. The
filled grant is frozen in the request's terms, so the approver sees exactly what will be issued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from core.issuers.base import GrantRefused

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELDS = ("target", "action", "environment", "agent", "request_id")
_PARAMETER = re.compile(r"parameters\.([A-Za-z_][A-Za-z0-9_-]{0,63})")
SAMPLE_VALUE = "sample"  # what ``policy check`` substitutes to validate a template's shape


def placeholders(template: Any, where: str = "grant") -> list[tuple[str, str]]:
    """Every placeholder in ``template`` as (where, name); refuses an unknown one."""
    found: list[tuple[str, str]] = []
    for path, text in _strings(template, where):
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in _FIELDS and not _PARAMETER.fullmatch(name):
                raise GrantRefused(
                    path,
                    f"unknown placeholder {{{name}}}: use {{target}}, {{action}}, "
                    "{environment}, {agent}, {request_id} or {parameters.NAME}",
                )
            found.append((path, name))
        if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
            raise GrantRefused(path, "unbalanced { or } (braces only around a placeholder)")
    return found


def fill(
    template: Any,
    values: Mapping[str, str],
    parameters: Mapping[str, Any],
    *,
    safe: re.Pattern[str],
    safe_text: str,
    issuer_type: str,
) -> Any:
    """``template`` with every placeholder replaced; ``GrantRefused`` names the field of the
    request whose value is missing or unsafe (``parameters.table``, ``target``)."""

    def value_of(name: str) -> str:
        parameter = _PARAMETER.fullmatch(name)
        if parameter is None:
            source, value = name, values.get(name)
        else:
            source, value = name, parameters.get(parameter.group(1))
            if value is None:
                raise GrantRefused(source, "missing: the rule's grant needs this parameter")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise GrantRefused(source, "must be a string or an integer to be used in a grant")
        text = str(value)
        if not safe.fullmatch(text):
            raise GrantRefused(
                source, f"not allowed in a {issuer_type} grant: it must be {safe_text}"
            )
        return text

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _PLACEHOLDER.sub(lambda m: value_of(m.group(1)), node)
        if isinstance(node, list | tuple):
            return [walk(item) for item in node]
        if isinstance(node, Mapping):
            filled: dict[Any, Any] = {}
            for key, item in node.items():
                name = walk(key)  # a key may be filled too: ``tables: {"{parameters.t}": …}``
                if name in filled:
                    raise GrantRefused(f"grant.{key}", f"fills to {name!r}, a key given twice")
                filled[name] = walk(item)
            return filled
        return node

    placeholders(template)
    return walk(template)


def _strings(node: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(where, node)]
    if isinstance(node, list | tuple):
        return [s for i, item in enumerate(node) for s in _strings(item, f"{where}[{i}]")]
    if isinstance(node, Mapping):
        keys = [(f"{where}.{key}", key) for key in node if isinstance(key, str)]
        return keys + [s for key, item in node.items() for s in _strings(item, f"{where}.{key}")]
    return []
