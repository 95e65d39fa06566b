"""The tools file: which stepup intent each MCP tool call becomes (docs/mcp.md).

A call's arguments fill the templates (``{argname}``, ``{tool}``); every value filled from an
argument must be a valid stepup name (``core.names``), so a model cannot smuggle a look-alike
or a separator into a target. Unmapped tools are refused: fail closed unless ``"*"`` maps them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.names import canonical

ACTION_CLASSES = ("read", "write", "destructive", "privilege_change")
_FIELDS = {"action", "action_class", "target", "environment", "justification"}
_KEYS = _FIELDS | {"credential_argument"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MappingRefused(Exception):
    """A call that cannot become an intent; the text is shown to the model."""


@dataclass(frozen=True)
class ToolRule:
    pattern: str
    action: str
    action_class: str
    target: str
    environment: str
    justification: str = "MCP tool call {tool}"
    credential_argument: str | None = None


@dataclass(frozen=True)
class GatedCall:
    """One tool call as a stepup intent."""

    action: str
    action_class: str
    target: str
    environment: str
    justification: str
    credential_argument: str | None


@dataclass(frozen=True)
class ToolsFile:
    rules: tuple[ToolRule, ...]

    def rule_for(self, tool: str) -> ToolRule | None:
        """The exact name first, then globs in file order; ``"*"`` is simply the widest glob."""
        for rule in self.rules:
            if rule.pattern == tool:
                return rule
        globs = [rule for rule in self.rules if any(c in rule.pattern for c in "*?[")]
        globs.sort(key=lambda rule: rule.pattern == "*")
        return next((rule for rule in globs if fnmatch.fnmatchcase(tool, rule.pattern)), None)

    def intent(self, tool: str, arguments: Mapping[str, Any]) -> GatedCall:
        rule = self.rule_for(tool)
        if rule is None:
            raise MappingRefused(
                f"stepup refused the call: tool {tool!r} is not in the proxy's tools file"
            )
        if rule.credential_argument is not None and rule.credential_argument in arguments:
            raise MappingRefused(
                f"stepup refused the call: argument {rule.credential_argument!r} is filled in "
                "by stepup with the approved credential; leave it out"
            )
        fields = {name: _fill(getattr(rule, name), name, tool, arguments) for name in _FIELDS}
        return GatedCall(**fields, credential_argument=rule.credential_argument)


def _fill(template: str, field: str, tool: str, arguments: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "tool":
            raw: object = tool
        elif name in arguments:
            raw = arguments[name]
        else:
            raise MappingRefused(
                f"stepup refused the call: the {field} needs argument {name!r}, which is missing"
            )
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise MappingRefused(
                f"stepup refused the call: argument {name!r} is used in the {field} and must be "
                "a string or an integer"
            )
        text = str(raw)
        if field != "justification":
            try:
                named = canonical(text)
            except ValueError as exc:
                raise MappingRefused(
                    f"stepup refused the call: argument {name!r} cannot be part of the {field}: "
                    f"{exc}"
                ) from None
            if named != text:  # the upstream would get another string than the policy saw
                raise MappingRefused(
                    f"stepup refused the call: argument {name!r} is not in canonical form "
                    "(NFKC, ASCII); send it as plain ASCII"
                )
            if any(step in (".", "..") for step in text.split("/")):
                # "workspace/../.ssh" would match a policy's "workspace/*"
                raise MappingRefused(
                    f"stepup refused the call: argument {name!r} holds a '.' or '..' path step, "
                    f"which cannot be part of the {field}"
                )
        return text

    return _PLACEHOLDER.sub(value, template)


def parse_tools(document: object) -> ToolsFile:
    """The tools file's YAML, checked; ValueError says what is wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("tools"), dict):
        raise ValueError("a tools file is a mapping with a `tools:` mapping of tool name → intent")
    rules = []
    for pattern, entry in document["tools"].items():
        if not isinstance(pattern, str) or not isinstance(entry, dict):
            raise ValueError(f"tools.{pattern}: each entry maps a tool name to a mapping")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValueError(f"tools.{pattern}: unknown keys {sorted(unknown)}")
        missing = {"action", "action_class", "target", "environment"} - set(entry)
        if missing:
            raise ValueError(f"tools.{pattern}: missing {sorted(missing)}")
        if any(not isinstance(value, str) for value in entry.values()):
            raise ValueError(f"tools.{pattern}: every value is a string")
        if entry["action_class"] not in ACTION_CLASSES:
            raise ValueError(f"tools.{pattern}: action_class is one of {', '.join(ACTION_CLASSES)}")
        rules.append(ToolRule(pattern=pattern, **entry))
    return ToolsFile(tuple(rules))


def load_tools(path: Path) -> ToolsFile:
    return parse_tools(yaml.safe_load(path.read_text(encoding="utf-8")))
