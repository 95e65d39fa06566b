"""From the validated file (``PolicySpec``) to a ``Policy``: cross references, compiled matchers
and ready-made decisions. Every refusal is a ``PolicyError`` naming the rule and the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from core.durations import format_duration
from core.errors import PolicyError
from core.issuers.base import GrantRefused
from core.issuers.catalog import IssuerConfig
from core.model import Outcome, Tier
from core.names import fold
from core.policy.compiled import ApproverGroup, CompiledRule, PolicyDefaults
from core.policy.conditions import compile_conditions
from core.policy.decision import PolicyDecision
from core.policy.engine import Policy
from core.policy.matchers import GlobSet
from core.policy.schema import (
    APPROVE_ONLY_FIELDS,
    GRANTING_FIELDS,
    PolicySpec,
    RuleSpec,
)

DEFAULT_BREAK_GLASS_TTL = timedelta(minutes=5)
_DEFAULT_TIER = {Outcome.ALLOW: Tier.LOW, Outcome.APPROVE: Tier.HIGH, Outcome.DENY: Tier.HIGH}
# Keys the engine's index decides; the others are checked per candidate rule.
_INDEXED = frozenset({"action", "action_class", "environment"})


def build_policy(spec: PolicySpec, *, digest: str, source: str = "<policy>") -> Policy:
    defaults = PolicyDefaults(
        approval_timeout=spec.defaults.approval_timeout,
        claim_window=spec.defaults.claim_window,
        max_ttl=spec.defaults.max_ttl,
        timezone=spec.defaults.timezone,
    )
    groups = {
        name: ApproverGroup(
            name=name,
            slack_users=frozenset(group.slack_users),
            emails=frozenset(group.emails),
            slack_usergroup=group.slack_usergroup,
        )
        for name, group in spec.approver_groups.items()
    }
    issuers = _issuers(spec)
    first_use: dict[str, int] = {}
    rules: list[CompiledRule] = []
    for index, rule in enumerate(spec.rules):
        where = f"rules[{index}] ({rule.name})"
        if rule.name in first_use:
            raise PolicyError(
                f"duplicate rule name {rule.name!r}: rules[{first_use[rule.name]}] has it already",
                location=f"{where}.name",
            )
        first_use[rule.name] = index
        builder = _RuleBuilder(index, rule, where, defaults, groups, spec.channels, digest, issuers)
        rules.append(builder.build())
    return Policy(
        digest=digest,
        defaults=defaults,
        groups=groups,
        channels=spec.channels,
        rules=rules,
        source=source,
        issuers=issuers,
    )


def _issuers(spec: PolicySpec) -> dict[str, IssuerConfig]:
    issuers: dict[str, IssuerConfig] = {}
    for name, raw in spec.issuers.items():
        try:
            issuers[name] = IssuerConfig.parse(name, raw)
        except ValueError as exc:
            raise PolicyError(str(exc), location=f"issuers.{name}") from None
    return issuers


class _RuleBuilder:
    """Checks one rule against the rest of the file and compiles it."""

    def __init__(
        self,
        index: int,
        rule: RuleSpec,
        where: str,
        defaults: PolicyDefaults,
        groups: Mapping[str, ApproverGroup],
        channels: Mapping[str, str],
        digest: str,
        issuers: Mapping[str, IssuerConfig],
    ) -> None:
        self.index = index
        self.rule = rule
        self.where = where
        self.defaults = defaults
        self.groups = groups
        self.channels = channels
        self.digest = digest
        self.issuers = issuers

    def fail(self, field: str, detail: str) -> PolicyError:
        return PolicyError(detail, location=f"{self.where}.{field}")

    def build(self) -> CompiledRule:
        rule = self.rule
        self._refuse_meaningless_fields()
        conditions = compile_conditions(rule.match, self.defaults.timezone)
        actions = GlobSet(rule.match.action) if rule.match.action is not None else None
        classes = frozenset(rule.match.action_class) if rule.match.action_class else None
        environments = (
            frozenset(fold(value) for value in rule.match.environment)
            if rule.match.environment
            else None
        )
        decision = self._decision()
        return CompiledRule(
            index=self.index,
            name=rule.name,
            outcome=rule.decision,
            tier=decision.tier,
            conditions=conditions,
            residual=tuple(
                c
                for c, key in zip(conditions, rule.match.keys_in_order(), strict=True)
                if key not in _INDEXED
            ),
            actions=actions,
            action_classes=classes,
            environments=environments,
            decision=decision,
            on_break_glass=self._on_break_glass(decision),
        )

    def _refuse_meaningless_fields(self) -> None:
        decision = self.rule.decision
        if decision is Outcome.APPROVE:
            return
        fields = APPROVE_ONLY_FIELDS + (GRANTING_FIELDS if decision is Outcome.DENY else ())
        for field in fields:
            if getattr(self.rule, field) is not None:
                raise self.fail(field, f"{field} has no effect on a rule with decision {decision}")

    def _base(self) -> PolicyDecision:
        rule, defaults = self.rule, self.defaults
        max_ttl = min(rule.max_ttl or defaults.max_ttl, defaults.max_ttl)
        return PolicyDecision(
            outcome=rule.decision,
            rule=rule.name,
            tier=rule.tier or _DEFAULT_TIER[rule.decision],
            reasons=(),
            policy_digest=self.digest,
            approver_groups=(),
            quorum=0,
            channel=None,
            notify_dm=False,
            max_ttl=max_ttl,
            approval_timeout=defaults.approval_timeout,
            claim_window=rule.claim_window or defaults.claim_window,
            step_up=False,
            break_glass=False,
            escalate_after=None,
            escalate_to=None,
            require_dpop=bool(rule.require_dpop),
            **self._delegation(),
            **self._credential(max_ttl),
        )

    def _delegation(self) -> dict[str, Any]:
        rule = self.rule
        if not rule.delegable:
            if rule.max_depth is not None:
                raise self.fail("max_depth", "max_depth needs delegable: true")
            return {}
        return {"delegable": True, "max_depth": rule.max_depth or 3}

    def _credential(self, max_ttl: timedelta) -> dict[str, Any]:
        """The rule's issuer and grant template, checked against the issuer's type."""
        rule = self.rule
        if rule.issuer is None:
            if rule.grant is not None:
                raise self.fail("grant", "grant needs issuer: the name of an issuers: entry")
            return {}
        config = self.issuers.get(rule.issuer)
        if config is None:
            known = ", ".join(sorted(self.issuers)) or "none is defined"
            raise self.fail("issuer", f"unknown issuer {rule.issuer!r} (issuers: {known})")
        grant = rule.grant or {}
        try:
            config.check_template(grant)
        except GrantRefused as exc:
            raise PolicyError(exc.detail, location=f"{self.where}.{exc.field}") from None
        self._check_min_ttl(config, max_ttl, "max_ttl")
        return {"issuer": config, "grant": grant}

    def _check_min_ttl(self, config: IssuerConfig, ttl: timedelta, field: str) -> None:
        shortest = config.kind.min_ttl
        if ttl < shortest:
            raise self.fail(
                field,
                f"{field} {format_duration(ttl)} is shorter than the {config.type} issuer's "
                f"minimum of {format_duration(shortest)}: its credentials cannot live less",
            )

    def _decision(self) -> PolicyDecision:
        rule, base = self.rule, self._base()
        if rule.decision is Outcome.DENY:
            return replace(base, reasons=(rule.reason or f"denied by rule {rule.name}",))
        if rule.decision is Outcome.ALLOW:
            return replace(base, reasons=(rule.reason or f"pre-authorised by rule {rule.name}",))
        approvers = self._approvers()
        quorum = rule.quorum or 1
        self._check_quorum(approvers, quorum)
        notify = rule.notify or ("channel",)
        escalate_to = self._escalate_to()
        default_reason = (
            f"rule {rule.name} requires {quorum} approval(s) from {', '.join(approvers)}"
        )
        return replace(
            base,
            reasons=(rule.reason or default_reason,),
            approver_groups=approvers,
            quorum=quorum,
            channel=self._channel(notify),
            notify_dm="dm" in notify,
            approval_timeout=rule.approval_timeout or self.defaults.approval_timeout,
            step_up=bool(rule.step_up),
            escalate_after=self._escalate_after(escalate_to),
            escalate_to=escalate_to,
        )

    def _on_break_glass(self, decision: PolicyDecision) -> PolicyDecision:
        rule = self.rule
        if rule.decision is Outcome.ALLOW:
            note = f"break-glass not needed: rule {rule.name} allows without approval"
            return replace(decision, reasons=(*decision.reasons, note))
        if not rule.break_glass:
            if rule.break_glass_ttl is not None:
                raise self.fail("break_glass_ttl", "break_glass_ttl needs break_glass: true")
            note = f"break-glass not permitted by rule {rule.name}"
            return replace(decision, reasons=(*decision.reasons, note))
        ttl = rule.break_glass_ttl or min(DEFAULT_BREAK_GLASS_TTL, decision.max_ttl)
        if decision.issuer is not None:
            config = decision.issuer
            ttl = max(ttl, config.kind.min_ttl) if rule.break_glass_ttl is None else ttl
            self._check_min_ttl(config, ttl, "break_glass_ttl")
        if ttl > decision.max_ttl:
            raise self.fail(
                "break_glass_ttl",
                f"break_glass_ttl {format_duration(ttl)} exceeds the rule's max_ttl "
                f"{format_duration(decision.max_ttl)}",
            )
        granted = (
            f"break-glass granted by rule {rule.name}: allowed at once "
            f"for {format_duration(ttl)}, subject to review"
        )
        return replace(
            decision,
            outcome=Outcome.ALLOW,
            break_glass=True,
            max_ttl=ttl,
            reasons=(granted, *decision.reasons),
        )

    def _approvers(self) -> tuple[str, ...]:
        if not self.rule.approvers:
            raise self.fail(
                "approvers", "decision approve needs approvers: a group name or a list of them"
            )
        names = tuple(dict.fromkeys(self.rule.approvers))
        for name in names:
            self._require_group("approvers", name)
        return names

    def _require_group(self, field: str, name: str) -> None:
        if name not in self.groups:
            known = ", ".join(sorted(self.groups)) or "none"
            close = [g for g in self.groups if fold(g) == fold(name)]
            hint = f"; letter case differs from {close[0]!r}" if close else ""
            raise self.fail(field, f"undefined approver group {name!r} (defined: {known}){hint}")

    def _check_quorum(self, approvers: tuple[str, ...], quorum: int) -> None:
        groups = [self.groups[name] for name in approvers]
        if any(group.slack_usergroup for group in groups):
            return  # a Slack user group's size is only known at run time
        static = sum(group.static_size() for group in groups)
        if quorum > static:
            raise self.fail(
                "quorum",
                f"quorum {quorum} exceeds the {static} listed member(s) of {', '.join(approvers)}",
            )

    def _channel(self, notify: tuple[str, ...]) -> str | None:
        channel = self.rule.channel
        if "channel" not in notify:
            if channel is not None:
                raise self.fail("notify", "a channel is set but notify does not include 'channel'")
            return None
        if channel is None:
            raise self.fail("channel", "notify includes 'channel' but the rule names no channel")
        if channel not in self.channels:
            known = ", ".join(sorted(self.channels)) or "none"
            raise self.fail("channel", f"undefined channel {channel!r} (defined: {known})")
        return self.channels[channel]

    def _escalate_to(self) -> str | None:
        rule = self.rule
        if rule.escalate_to is None:
            if rule.escalate_after is not None:
                raise self.fail("escalate_after", "escalate_after needs escalate_to (a group)")
            return None
        self._require_group("escalate_to", rule.escalate_to)
        return rule.escalate_to

    def _escalate_after(self, escalate_to: str | None) -> timedelta | None:
        after = self.rule.escalate_after
        if escalate_to is None:
            return None
        if after is None:
            raise self.fail("escalate_to", "escalate_to needs escalate_after (a duration)")
        timeout = self.rule.approval_timeout or self.defaults.approval_timeout
        if after >= timeout:
            raise self.fail(
                "escalate_after",
                f"escalate_after {format_duration(after)} is not before the approval timeout "
                f"{format_duration(timeout)}: it would never happen",
            )
        return after
