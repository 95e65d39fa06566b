"""One named method per kind of audit event. Each is written in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class AuditKind(StrEnum):
    INTENT_SUBMITTED = "intent.submitted"
    POLICY_DECIDED = "policy.decided"
    DECISION_RECORDED = "decision.recorded"  # one signed approver click
    CLICK_REFUSED = "click.refused"  # an ineligible click: not a decision, kept for review
    REQUEST_APPROVED = "request.approved"
    REQUEST_DENIED = "request.denied"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_CANCELLED = "request.cancelled"
    REQUEST_REVOKED = "request.revoked"  # an approval revoked before its credential was claimed
    CREDENTIAL_ISSUED = "credential.issued"
    CREDENTIAL_REVOKED = "credential.revoked"
    SESSION_COMPLETED = "session.completed"
    BREAK_GLASS_USED = "break_glass.used"
    BREAK_GLASS_REVIEWED = "break_glass.reviewed"
    REQUEST_ESCALATED = "request.escalated"
    ISSUER_REVOKE_FAILED = "credential.issuer_revoke_failed"
    # The issuer could not mint the credential: the request stays approved, claimable again.
    ISSUE_FAILED = "credential.issue_failed"
    ISSUER_REVOKED = "credential.issuer_revoked"
    AGENT_ADDED = "agent.added"
    AGENT_DISABLED = "agent.disabled"
    RESOURCE_SERVER_ADDED = "resource_server.added"
    # The chain signs itself: (seq, hash) of the entry before, with the service key.
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AGENT_KEY_ROTATED = "agent.key_rotated"
    RESOURCE_SERVER_DISABLED = "resource_server.disabled"
    RESOURCE_SERVER_KEY_ROTATED = "resource_server.key_rotated"
    SIGNING_KEY_ROTATED = "signing_key.rotated"
    # A trusted issuer of workload tokens added (or replaced) or removed (docs/identity.md).
    TRUST_ADDED = "trust.added"
    TRUST_REMOVED = "trust.removed"
    # An agent handed part of its active request to another (docs/delegation.md); logged
    # under the parent request, whose lifecycle it does not change.
    DELEGATION_CREATED = "delegation.created"
    # A child credential minted by RFC 8693 token exchange; logged under the child request.
    TOKEN_EXCHANGED = "token.exchanged"  # noqa: S105 (an audit kind)
    # An agent's callback allow-list changed (stepup agents callback-hosts; docs/callbacks.md).
    AGENT_CALLBACK_HOSTS_CHANGED = "agent.callback_hosts_changed"


class AuditAppender(Protocol):
    def append(
        self,
        kind: AuditKind,
        *,
        at: datetime,
        request_id: str | None,
        actor: str | None,
        data: dict[str, Any],
    ) -> None: ...


class AuditLog:
    """Typed front of the appender, so every call site says what happened, not how."""

    def __init__(self, appender: AuditAppender) -> None:
        self._append = appender.append

    def intent_submitted(
        self, request_id: str, agent: str, intent: dict[str, Any], at: datetime
    ) -> None:
        self._append(
            AuditKind.INTENT_SUBMITTED, at=at, request_id=request_id, actor=agent, data=intent
        )

    def policy_decided(self, request_id: str, decision: dict[str, Any], at: datetime) -> None:
        self._append(
            AuditKind.POLICY_DECIDED, at=at, request_id=request_id, actor="policy", data=decision
        )

    def decision_recorded(
        self, request_id: str, approver: str, vote: str, signed_decision: str, at: datetime
    ) -> None:
        self._append(
            AuditKind.DECISION_RECORDED,
            at=at,
            request_id=request_id,
            actor=approver,
            data={"vote": vote, "signed_decision": signed_decision},
        )

    def click_refused(self, request_id: str, clicker: str, why: str, at: datetime) -> None:
        self._append(
            AuditKind.CLICK_REFUSED, at=at, request_id=request_id, actor=clicker, data={"why": why}
        )

    def request_approved(self, request_id: str, approvers: list[str], at: datetime) -> None:
        self._append(
            AuditKind.REQUEST_APPROVED,
            at=at,
            request_id=request_id,
            actor=None,
            data={"approvers": approvers},
        )

    def request_denied(self, request_id: str, by: str | None, reason: str, at: datetime) -> None:
        self._append(
            AuditKind.REQUEST_DENIED,
            at=at,
            request_id=request_id,
            actor=by,
            data={"reason": reason},
        )

    def request_expired(self, request_id: str, was: str, at: datetime) -> None:
        self._append(
            AuditKind.REQUEST_EXPIRED,
            at=at,
            request_id=request_id,
            actor="scheduler",
            data={"was": was},
        )

    def request_cancelled(
        self, request_id: str, by: str, at: datetime, *, reason: str | None = None
    ) -> None:
        """``reason``: why, when it was not the agent's own choice (its parent ended)."""
        data = {"reason": reason} if reason is not None else {}
        self._append(AuditKind.REQUEST_CANCELLED, at=at, request_id=request_id, actor=by, data=data)

    def delegation_created(
        self, request_id: str, agent: str, delegation: dict[str, Any], at: datetime
    ) -> None:
        """``agent`` (the parent request's) delegated part of ``request_id``."""
        self._append(
            AuditKind.DELEGATION_CREATED,
            at=at,
            request_id=request_id,
            actor=agent,
            data=delegation,
        )

    def token_exchanged(
        self, request_id: str, agent: str, exchange: dict[str, Any], at: datetime
    ) -> None:
        """``agent`` exchanged its parent's credential for ``request_id``'s (RFC 8693)."""
        self._append(
            AuditKind.TOKEN_EXCHANGED, at=at, request_id=request_id, actor=agent, data=exchange
        )

    def request_revoked(self, request_id: str, by: str, reason: str, at: datetime) -> None:
        self._append(
            AuditKind.REQUEST_REVOKED,
            at=at,
            request_id=request_id,
            actor=by,
            data={"reason": reason},
        )

    def credential_issued(
        self, request_id: str, agent: str, credential: dict[str, Any], at: datetime
    ) -> None:
        self._append(
            AuditKind.CREDENTIAL_ISSUED, at=at, request_id=request_id, actor=agent, data=credential
        )

    def credential_revoked(
        self, request_id: str, jti: str, by: str, reason: str, at: datetime
    ) -> None:
        self._append(
            AuditKind.CREDENTIAL_REVOKED,
            at=at,
            request_id=request_id,
            actor=by,
            data={"jti": jti, "reason": reason},
        )

    def session_completed(
        self, request_id: str, agent: str, outcome: str, detail: str, at: datetime
    ) -> None:
        self._append(
            AuditKind.SESSION_COMPLETED,
            at=at,
            request_id=request_id,
            actor=agent,
            data={"outcome": outcome, "detail": detail},
        )

    def break_glass_used(self, request_id: str, agent: str, rule: str | None, at: datetime) -> None:
        self._append(
            AuditKind.BREAK_GLASS_USED,
            at=at,
            request_id=request_id,
            actor=agent,
            data={"rule": rule},
        )

    def break_glass_reviewed(self, request_id: str, by: str, at: datetime) -> None:
        self._append(
            AuditKind.BREAK_GLASS_REVIEWED, at=at, request_id=request_id, actor=by, data={}
        )

    def request_escalated(self, request_id: str, stage: int, to: str | None, at: datetime) -> None:
        self._append(
            AuditKind.REQUEST_ESCALATED,
            at=at,
            request_id=request_id,
            actor="scheduler",
            data={"stage": stage, "to": to},
        )

    def issue_failed(
        self, request_id: str, agent: str, issuer: str, error: str, at: datetime
    ) -> None:
        self._append(
            AuditKind.ISSUE_FAILED,
            at=at,
            request_id=request_id,
            actor=agent,
            data={"issuer": issuer, "error": error[:500]},
        )

    def issuer_revoke_failed(self, request_id: str, jti: str, attempts: int, at: datetime) -> None:
        self._append(
            AuditKind.ISSUER_REVOKE_FAILED,
            at=at,
            request_id=request_id,
            actor="revoker",
            data={"jti": jti, "attempts": attempts},
        )

    def issuer_revoked(self, request_id: str, jti: str, attempts: int, at: datetime) -> None:
        self._append(
            AuditKind.ISSUER_REVOKED,
            at=at,
            request_id=request_id,
            actor="revoker",
            data={"jti": jti, "attempts": attempts},
        )

    def agent_added(
        self,
        agent: str,
        owner: str,
        by: str,
        at: datetime,
        *,
        identities: Sequence[str] = (),
        key: bool = True,
        callback_hosts: Sequence[str] = (),
    ) -> None:
        """``identities``: the workload identities bound (``trust:subject``); ``key`` False:
        registered without a static key; ``callback_hosts``: its callback allow-list."""
        data: dict[str, Any] = {"agent": agent, "owner": owner}
        if identities:
            data["identities"] = list(identities)
        if not key:
            data["key"] = False
        if callback_hosts:
            data["callback_hosts"] = list(callback_hosts)
        self._append(AuditKind.AGENT_ADDED, at=at, request_id=None, actor=by, data=data)

    def agent_callback_hosts_changed(
        self,
        agent: str,
        by: str,
        at: datetime,
        *,
        added: Sequence[str],
        removed: Sequence[str],
        hosts: Sequence[str],
    ) -> None:
        """``hosts``: the agent's callback allow-list after the change."""
        data = {
            "agent": agent,
            "added": list(added),
            "removed": list(removed),
            "hosts": list(hosts),
        }
        self._append(
            AuditKind.AGENT_CALLBACK_HOSTS_CHANGED, at=at, request_id=None, actor=by, data=data
        )

    def trust_added(
        self, name: str, trusted: dict[str, Any], by: str, at: datetime, *, replaced: bool
    ) -> None:
        """``trusted``: kind, issuer, audience, jwks_uri, and the bundle's digest."""
        data = {"name": name, **trusted, "replaced": replaced}
        self._append(AuditKind.TRUST_ADDED, at=at, request_id=None, actor=by, data=data)

    def trust_removed(self, name: str, by: str, at: datetime, *, unbound: int) -> None:
        """``unbound``: how many agent identities bound through it went with it."""
        data = {"name": name, "unbound": unbound}
        self._append(AuditKind.TRUST_REMOVED, at=at, request_id=None, actor=by, data=data)

    def agent_disabled(self, agent: str, by: str, at: datetime) -> None:
        self._append(
            AuditKind.AGENT_DISABLED, at=at, request_id=None, actor=by, data={"agent": agent}
        )

    def resource_server_added(
        self, name: str, by: str, at: datetime, *, audiences: Sequence[str] | None = None
    ) -> None:
        data: dict[str, Any] = {"name": name}
        if audiences is not None:
            data["audiences"] = list(audiences)
        self._append(AuditKind.RESOURCE_SERVER_ADDED, at=at, request_id=None, actor=by, data=data)

    def agent_key_rotated(
        self, agent: str, by: str, at: datetime, *, old_keys: int, old_keys_until: datetime
    ) -> None:
        """A new key for ``agent``; its ``old_keys`` live keys stop at ``old_keys_until``."""
        self._append(
            AuditKind.AGENT_KEY_ROTATED,
            at=at,
            request_id=None,
            actor=by,
            data={
                "agent": agent,
                "old_keys": old_keys,
                "old_keys_until": old_keys_until.isoformat(),
            },
        )

    def resource_server_disabled(self, name: str, by: str, at: datetime) -> None:
        self._append(
            AuditKind.RESOURCE_SERVER_DISABLED,
            at=at,
            request_id=None,
            actor=by,
            data={"name": name},
        )

    def resource_server_key_rotated(self, name: str, by: str, at: datetime) -> None:
        """A new introspection key for ``name``; the old one stopped at ``at``."""
        self._append(
            AuditKind.RESOURCE_SERVER_KEY_ROTATED,
            at=at,
            request_id=None,
            actor=by,
            data={"name": name},
        )

    def signing_key_rotated(
        self, new_kid: str, old_kid: str, old_leaves_jwks: datetime | None, by: str, at: datetime
    ) -> None:
        """The service's signing key changed; the old public key stays in the JWKS until
        ``old_leaves_jwks`` (never the private key, of course)."""
        self._append(
            AuditKind.SIGNING_KEY_ROTATED,
            at=at,
            request_id=None,
            actor=by,
            data={
                "new_kid": new_kid,
                "old_kid": old_kid,
                "old_leaves_jwks": old_leaves_jwks.isoformat() if old_leaves_jwks else None,
            },
        )
