"""Compiled policy parts: approver groups, defaults and rules with their ready-made decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.model import ActionClass, Intent, Outcome, Tier
from core.policy.conditions import Condition
from core.policy.decision import PolicyDecision
from core.policy.matchers import GlobSet


@dataclass(frozen=True, slots=True)
class ApproverGroup:
    """People allowed to approve. ``emails`` are lowercased; a Slack user group adds members
    that are only known at run time."""

    name: str
    slack_users: frozenset[str]
    emails: frozenset[str]
    slack_usergroup: str | None = None

    def static_size(self) -> int:
        """Members listed in the file (a person listed by id and by email counts twice)."""
        return len(self.slack_users) + len(self.emails)

    def has_member(self, slack_user_id: str, email: str | None = None) -> bool:
        """Membership by listed id or email; Slack user-group membership is the caller's job."""
        if slack_user_id in self.slack_users:
            return True
        return email is not None and email.lower() in self.emails


@dataclass(frozen=True, slots=True)
class PolicyDefaults:
    approval_timeout: timedelta
    claim_window: timedelta
    max_ttl: timedelta
    timezone: str


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule, ready to match.

    ``conditions`` holds every key of ``match`` in a fixed order (for ``explain``);
    ``residual`` only those the engine's index does not already decide (action, action_class
    and environment are indexed); ``environments`` are folded (letter case ignored).
    ``decision`` and ``on_break_glass`` are built once, so a match costs no allocation.
    """

    index: int
    name: str
    outcome: Outcome
    tier: Tier
    conditions: tuple[Condition, ...]
    residual: tuple[Condition, ...]
    actions: GlobSet | None
    action_classes: frozenset[ActionClass] | None
    environments: frozenset[str] | None
    decision: PolicyDecision
    on_break_glass: PolicyDecision

    @property
    def label(self) -> str:
        """``rules[1] (prod-destructive)``: how messages name the rule."""
        return f"rules[{self.index}] ({self.name})"

    def admits(self, action_class: ActionClass, environment: str) -> bool:
        """``environment`` folded (``core.names.fold``), as ``environments`` are."""
        return (self.action_classes is None or action_class in self.action_classes) and (
            self.environments is None or environment in self.environments
        )

    def admits_action(self, action: str) -> bool:
        """``action`` folded (``core.names.fold``)."""
        return self.actions is None or self.actions.matches_folded(action)

    def residual_holds(self, intent: Intent, now: datetime) -> bool:
        # A plain loop: measurably faster than all() over a generator on the hot path.
        for condition in self.residual:  # noqa: SIM110
            if not condition.holds(intent, now):
                return False
        return True

    def first_failure(self, intent: Intent, now: datetime) -> str | None:
        """The first condition, in match-key order, that the request fails; None on a match."""
        for condition in self.conditions:
            if not condition.holds(intent, now):
                return condition.failure(intent, now)
        return None

    def decide(self, intent: Intent) -> PolicyDecision:
        return self.on_break_glass if intent.break_glass else self.decision
