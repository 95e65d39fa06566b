"""What the policy answers for one request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.issuers.catalog import IssuerConfig
from core.model import Outcome, Tier


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome with everything the lifecycle needs to act on it.

    ``channel`` is the resolved Slack channel id (``C0APPROVALS``), ``None`` when the rule does
    not post to a channel. ``max_ttl`` caps the credential lifetime (already the minimum of the
    rule's and the default cap; the break-glass TTL when break-glass was granted).
    """

    outcome: Outcome
    rule: str | None
    tier: Tier
    reasons: tuple[str, ...]
    policy_digest: str
    approver_groups: tuple[str, ...]
    quorum: int
    channel: str | None
    notify_dm: bool
    max_ttl: timedelta
    approval_timeout: timedelta
    claim_window: timedelta
    step_up: bool
    break_glass: bool
    escalate_after: timedelta | None
    escalate_to: str | None
    # The rule's credential issuer (``issuers:``) and its grant template; None: the built-in JWT
    issuer: IssuerConfig | None = None
    grant: Mapping[str, Any] | None = None
    require_dpop: bool = False  # a claim without a DPoP proof is refused
    delegable: bool = False  # the request may be delegated in part, to max_depth levels
    max_depth: int = 3
