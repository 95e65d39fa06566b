"""Delegation (docs/delegation.md) as pure rules: what a delegation is, and how it narrows.

An active request holds one action on one target. A delegation hands part of that to another
agent as globs, and a glob may only reach the parent's own name or names *under* it: the
name itself, or the name followed by a separator (``/``, ``.`` or ``:``) and anything. So
``deploy`` on ``payments`` may be delegated as ``deploy`` / ``deploy.*`` on ``payments`` /
``payments/*``, never as ``*``, ``deploy*`` (``deployX`` is not under ``deploy``) or another
name. The check is on the glob's text: everything up to its first wildcard must be the
parent's name exactly, or start with the name and a separator. Letter case is ignored, as the
policy ignores it (``core.names.fold``).

A child's request is still evaluated by the policy like any other: a delegation never
approves anything, it only bounds what the child may ask for under the parent's name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.names import check_pattern, fold
from core.policy.matchers import GlobSet

SEPARATORS = "/.:"
_WILDCARD = re.compile(r"[*?\[]")
MAX_GLOBS = 20
MAX_DELEGATION_TTL = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Delegation:
    """Part of an active request handed to ``agent_id``."""

    id: str
    parent_request_id: str
    agent_id: str  # the child agent
    actions: tuple[str, ...]
    targets: tuple[str, ...]
    max_ttl_seconds: int
    depth: int  # 1 for a delegation of a root request
    created_at: datetime
    created_by: str  # the parent request's agent

    @property
    def max_ttl(self) -> timedelta:
        return timedelta(seconds=self.max_ttl_seconds)

    def allows(self, field: str, value: str) -> bool:
        """Whether ``value`` (an action or a target, per ``field``) matches this delegation."""
        globs = self.actions if field == "action" else self.targets
        return GlobSet(globs).matches(value)


def under(parent: str, name: str) -> bool:
    """Whether ``name`` is ``parent`` or a name under it (``parent`` + separator + more)."""
    p, n = fold(parent), fold(name)
    return n == p or (len(n) > len(p) + 1 and n.startswith(p) and n[len(p)] in SEPARATORS)


def glob_within(parent: str, glob: str) -> bool:
    """Whether every name ``glob`` can match is ``parent`` or under it (by the glob's text:
    its literal part, up to the first wildcard, must be the whole name or name+separator)."""
    wildcard = _WILDCARD.search(glob)
    if wildcard is None:
        return under(parent, glob)
    prefix = fold(glob[: wildcard.start()])
    p = fold(parent)
    return len(prefix) > len(p) and prefix.startswith(p) and prefix[len(p)] in SEPARATORS


def check_globs(field: str, parent: str, globs: Sequence[str]) -> tuple[str, ...]:
    """``globs`` as given, or ValueError naming the first one that is not within ``parent``."""
    if not globs:
        raise ValueError(f"{field}: at least one glob is required")
    if len(globs) > MAX_GLOBS:
        raise ValueError(f"{field}: at most {MAX_GLOBS} globs")
    for glob in globs:
        if not glob or len(glob) > 512:
            raise ValueError(f"{field}: a glob is 1 to 512 characters")
        try:
            check_pattern(glob, glob=True)
        except ValueError as exc:
            raise ValueError(f"{field}: {glob!r}: {exc}") from None
        if not glob_within(parent, glob):
            raise ValueError(
                f"{field}: {glob!r} reaches beyond the parent request's {parent!r}: a "
                f"delegation may only name {parent!r} or names under it ({parent}/…, "
                f"{parent}.…, {parent}:…)"
            )
    return tuple(dict.fromkeys(globs))


def child_ttl(
    normal: timedelta, parent_expires_at: datetime, delegation_max_ttl: timedelta, now: datetime
) -> timedelta:
    """A child's credential lifetime: its own rule's, capped by the delegation's max TTL and
    by what is left of the parent's credential (never outliving it). Whole seconds, so the
    JWT's ``exp`` never passes the parent's."""
    left = timedelta(seconds=int((parent_expires_at - now).total_seconds()))
    return min(normal, delegation_max_ttl, left)
