"""A rule's terms, frozen on the request at submission so a policy reload cannot loosen them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Terms:
    """What the deciding rule asked for, frozen at submission so a reload cannot loosen it."""

    approver_groups: tuple[str, ...] = ()
    quorum: int = 1
    channel: str | None = None
    notify_dm: bool = False
    max_ttl_seconds: int = 900
    approval_timeout_seconds: int = 1800
    claim_window_seconds: int = 300
    step_up: bool = False
    break_glass: bool = False
    escalate_after_seconds: int | None = None
    escalate_to: str | None = None
    # The credential (docs/issuers.md): the issuer's name and type and the grant with the
    # request's values filled in, and what will be issued in words; None: the built-in JWT.
    issuer: str | None = None
    issuer_type: str | None = None
    issuer_settings: dict[str, Any] | None = None  # as approved: a claim refuses others
    grant: dict[str, Any] | None = None
    issues: str | None = None
    require_dpop: bool = False  # a claim must prove the agent's DPoP key (RFC 9449)
    delegable: bool = False  # may be delegated in part (docs/delegation.md)
    max_depth: int = 3  # the longest chain of delegations from the root request

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Terms:
        raw = json.loads(text)
        raw["approver_groups"] = tuple(raw.get("approver_groups", ()))
        return cls(**raw)

    @property
    def has_card(self) -> bool:
        """Requests that waited for approvers have a Slack card (break-glass ones an alert)."""
        return bool(self.approver_groups) and not self.break_glass

    @property
    def credential_type(self) -> str:
        """``jwt`` for the built-in credential, else the issuer's type (``postgres``)."""
        return self.issuer_type or "jwt"

    @property
    def max_ttl(self) -> timedelta:
        return timedelta(seconds=self.max_ttl_seconds)
