"""The compiled policy and its evaluation: deny wins, else first match, else deny."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TypeVar

from core.errors import NotFound
from core.issuers.catalog import IssuerConfig
from core.model import ActionClass, Intent, Outcome, Tier
from core.names import fold
from core.policy.compiled import ApproverGroup, CompiledRule, PolicyDefaults
from core.policy.decision import PolicyDecision

NO_MATCH_REASON = "no rule matched (deny by default)"

# Memo sizes: a full memo is cleared rather than pruned; refilling it is cheap and the
# agent-supplied action names cannot make it grow without bound.
_SCOPE_CACHE = 1024
_KEY_CACHE = 4096

_Candidates = tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


class Policy:
    """A loaded, validated policy. Immutable apart from its private lookup memos.

    ``evaluate`` only looks at the rules whose ``action_class``, ``environment`` and ``action``
    constraints admit the request (found once per distinct triple and memoised), split into
    deny rules and the rest, each in file order; then checks their remaining conditions.
    Names are compared with letter case ignored (``core.names.fold``): the scope memo is
    keyed by the folded environment, and the triple memo's entries are found from folded names.
    """

    __slots__ = (
        "_by_key",
        "_by_scope",
        "_no_match",
        "channels",
        "defaults",
        "digest",
        "groups",
        "issuers",
        "rule_names",
        "rules",
        "source",
    )

    def __init__(
        self,
        *,
        digest: str,
        defaults: PolicyDefaults,
        groups: Mapping[str, ApproverGroup],
        channels: Mapping[str, str],
        rules: Sequence[CompiledRule],
        source: str = "<policy>",
        issuers: Mapping[str, IssuerConfig] | None = None,
    ) -> None:
        self.digest = digest
        self.issuers: Mapping[str, IssuerConfig] = MappingProxyType(dict(issuers or {}))
        self.source = source
        self.defaults = defaults
        self.groups: Mapping[str, ApproverGroup] = MappingProxyType(dict(groups))
        self.channels: Mapping[str, str] = MappingProxyType(dict(channels))
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self.rule_names: tuple[str, ...] = tuple(rule.name for rule in self.rules)
        self._by_scope: dict[tuple[ActionClass, str], tuple[CompiledRule, ...]] = {}
        self._by_key: dict[tuple[ActionClass, str, str], _Candidates] = {}
        self._no_match = PolicyDecision(
            outcome=Outcome.DENY,
            rule=None,
            tier=Tier.HIGH,
            reasons=(NO_MATCH_REASON,),
            policy_digest=digest,
            approver_groups=(),
            quorum=0,
            channel=None,
            notify_dm=False,
            max_ttl=defaults.max_ttl,
            approval_timeout=defaults.approval_timeout,
            claim_window=defaults.claim_window,
            step_up=False,
            break_glass=False,
            escalate_after=None,
            escalate_to=None,
        )

    def __repr__(self) -> str:
        return f"Policy(source={self.source!r}, digest={self.digest!r}, rules={len(self.rules)})"

    def group(self, name: str) -> ApproverGroup:
        try:
            return self.groups[name]
        except KeyError:
            raise NotFound(f"no approver group named {name!r} in the policy") from None

    def evaluate(self, intent: Intent, now: datetime) -> PolicyDecision:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        # The memo is keyed by the names as sent (no lowering on the warm path); what it holds
        # is found from their folded form, so letter case never changes the decision.
        key = (intent.action_class, intent.environment, intent.action)
        candidates = self._by_key.get(key)
        if candidates is None:
            folded = (intent.action_class, fold(intent.environment), fold(intent.action))
            candidates = _remember(self._by_key, key, self._candidates(folded), _KEY_CACHE)
        denies, others = candidates
        for rule in denies:
            if rule.residual_holds(intent, now):
                return rule.decide(intent)
        for rule in others:
            if rule.residual_holds(intent, now):
                return rule.decide(intent)
        return self._no_match

    def _candidates(self, folded: tuple[ActionClass, str, str]) -> _Candidates:
        """The rules that admit this action class, and environment and action folded."""
        action_class, environment, action = folded
        scope = self._by_scope.get((action_class, environment))
        if scope is None:
            scope = _remember(
                self._by_scope,
                (action_class, environment),
                tuple(rule for rule in self.rules if rule.admits(action_class, environment)),
                _SCOPE_CACHE,
            )
        admitted = [rule for rule in scope if rule.admits_action(action)]
        denies = tuple(rule for rule in admitted if rule.outcome is Outcome.DENY)
        others = tuple(rule for rule in admitted if rule.outcome is not Outcome.DENY)
        return denies, others
