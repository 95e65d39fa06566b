"""Reading a policy file: YAML, then the schema, then the cross checks; one error family.

Every failure is a ``PolicyError`` whose ``location`` names where to look:
``line 7`` for YAML syntax, ``rules[1] (prod-destructive).aprovers`` for a rule's field,
``approver_groups.sre-leads.emails[0]`` elsewhere.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from core.errors import PolicyError
from core.policy.build import build_policy
from core.policy.engine import Policy
from core.policy.schema import PolicySpec, known_keys

_INT_TAG = "tag:yaml.org,2002:int"
_MAP_TAG = "tag:yaml.org,2002:map"


# libyaml's parser when present (about ten times faster on large files); same semantics.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _PolicyLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """Safe YAML with two fixes for hand-written policies: a repeated key is an error (PyYAML
    would silently keep the last one), and only plain decimal integers are integers, so
    ``end: 18:00`` stays a string instead of YAML 1.1's base-60 number 1080."""


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)


def _construct_mapping(loader: _PolicyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_PolicyLoader.add_constructor(_MAP_TAG, _construct_mapping)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and check policy text. The digest is over its UTF-8 bytes."""
    return _parse(text, _digest(text.encode("utf-8")), source)


def load_policy(path: str | PathLike[str]) -> Policy:
    """Read, parse and check a policy file. The digest is over the file's exact bytes.

    Every error names the file first (``policy.yaml: rules[1] (prod).approvers: ...``): at
    start-up or on a reload, the reader may not know which file was read.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(
            f"cannot read the policy file: {exc.strerror}", location=str(path)
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError("the policy file is not UTF-8 text", location=str(path)) from exc
    try:
        return _parse(text, _digest(raw), str(path))
    except PolicyError as exc:
        raise _in_file(exc, str(path)) from None


def _in_file(error: PolicyError, path: str) -> PolicyError:
    """``error`` with the file's name in front of its location."""
    detail = error.detail.removeprefix(f"{error.location}: ") if error.location else error.detail
    return PolicyError(detail, location=f"{path}: {error.location}" if error.location else path)


class PolicyHolder:
    """The policy in force. ``reload`` swaps in a new one only if it loads cleanly."""

    def __init__(self, policy: Policy) -> None:
        self._current = policy
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> PolicyHolder:
        return cls(load_policy(path))

    @property
    def current(self) -> Policy:
        return self._current

    def reload(self, path: str | PathLike[str]) -> Policy:
        """Load ``path``; on any failure raise ``PolicyError`` and keep the current policy."""
        with self._lock:
            try:
                policy = load_policy(path)
            except PolicyError:
                raise
            except Exception as exc:  # fail closed on surprises too: keep the old policy
                raise PolicyError(f"could not load the policy: {exc}", location=str(path)) from exc
            self._current = policy
            return policy


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _parse(text: str, digest: str, source: str) -> Policy:
    data = _read_yaml(text)
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise _policy_error(exc.errors(), data) from None
    return build_policy(spec, digest=digest, source=source)


def _read_yaml(text: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_PolicyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = f"line {mark.line + 1}" if mark is not None else ""
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError(f"YAML syntax error{column}: {problem}", location=location) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"YAML error: {exc}") from None
    if data is None:
        raise PolicyError("the policy is empty: it needs at least 'version: 1'")
    if not isinstance(data, dict):
        raise PolicyError(
            f"the policy must be a mapping (version, defaults, rules...), not {type(data).__name__}"
        )
    return data


def _policy_error(errors: Sequence[ErrorDetails], data: dict[str, Any]) -> PolicyError:
    """Name every problem by its location; the first one is the error's ``location``."""
    problems = [(_location(error["loc"], data), _message(error)) for error in errors]
    location, detail = problems[0]
    if len(problems) > 1:
        detail += "; also " + "; ".join(f"{where}: {what}" for where, what in problems[1:])
    return PolicyError(detail, location=location)


def _location(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if part == "[key]":
            text += " (the key)"
        elif isinstance(part, int):
            text += f"[{part}]"
            if index == 1 and loc[0] == "rules":
                text += _rule_name(data, part)
        else:
            text += f".{part}" if text else part
    return text


def _rule_name(data: dict[str, Any], index: int) -> str:
    rules = data.get("rules")
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        name = rules[index].get("name")
        if isinstance(name, str) and name:
            return f" ({name})"
    return ""


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, known_keys(), n=1)
        return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind != "value_error" and not isinstance(error["input"], dict | list):
        shown = repr(error["input"])
        message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return message
