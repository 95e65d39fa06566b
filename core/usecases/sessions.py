"""The agent's session: claim the credential, complete, cancel; revocation by people."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from core.approvals import approver_emails, check_party
from core.credentials import CredentialGrant, IssuedCredential
from core.lifecycle import Event
from core.model import AgentIdentity, Approver, SessionOutcome
from core.snapshots import RequestSnapshot
from core.store import NewCredential
from core.usecases.parts import Parts
from core.usecases.transition import Step, changing


class Sessions:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def claim(
        self, request_id: str, agent: AgentIdentity, *, now: datetime
    ) -> tuple[RequestSnapshot, IssuedCredential]:
        """Mint the credential of an approved request, once."""
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id, agent_id=agent.id)
            ttl = snap.terms.max_ttl
            if snap.requested_ttl_seconds:
                ttl = min(ttl, timedelta(seconds=snap.requested_ttl_seconds))
            unit.check(Step(snap, Event.CLAIM, agent.id))  # refuse before minting anything
            issued = self.parts.issuer.issue(
                CredentialGrant(
                    request_id=snap.id,
                    agent=snap.agent_id,
                    audience=snap.target,
                    scope=snap.action,
                    args_digest=snap.parameters_digest,
                    environment=snap.environment,
                    approvers=approver_emails(snap.votes),
                    on_behalf_of=snap.on_behalf_of,
                    ttl=ttl,
                ),
                now,
            )
            credential = NewCredential(
                request_id=snap.id,
                agent_id=snap.agent_id,
                jti=issued.handle,
                scope=issued.scope,
                audience=snap.target,
                issued_at=now,
                expires_at=issued.expires_at,
            )
            unit.tx.add_credential(credential)
            (claimed,) = unit.apply(
                Step(
                    snap,
                    Event.CLAIM,
                    agent.id,
                    {"credential": credential.info, "expires_at": None},
                    detail={
                        "credential": {
                            "jti": issued.handle,
                            "expires_at": issued.expires_at.isoformat(),
                            "scope": issued.scope,
                            "aud": snap.target,
                            "ttl_seconds": int(ttl.total_seconds()),
                        }
                    },
                )
            )
        return claimed, issued

    def complete(
        self,
        request_id: str,
        agent: AgentIdentity,
        outcome: SessionOutcome,
        detail: str,
        *,
        now: datetime,
    ) -> RequestSnapshot:
        """The agent reports its outcome; the credential is revoked with it."""
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id, agent_id=agent.id)
            (done,) = unit.apply(
                Step(
                    snap,
                    Event.COMPLETE,
                    agent.id,
                    {"outcome": outcome.value, "outcome_detail": detail},
                    reason=f"completed: {outcome.value}",
                    detail={"outcome": outcome.value, "detail": detail},
                )
            )
        return done

    def cancel(self, request_id: str, agent: AgentIdentity, *, now: datetime) -> RequestSnapshot:
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id, agent_id=agent.id)
            (cancelled,) = unit.apply(
                Step(
                    snap,
                    Event.CANCEL,
                    agent.id,
                    {"expires_at": None, "status_reason": "cancelled by agent"},
                )
            )
        return cancelled

    def revoke(self, request_id: str, *, by: str, reason: str, now: datetime) -> RequestSnapshot:
        """An approver or admin cuts off an approved or active request."""
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id)
            (revoked,) = unit.apply(
                Step(
                    snap,
                    Event.REVOKE,
                    by,
                    {"expires_at": None, "status_reason": reason},
                    reason=reason,
                )
            )
        return revoked

    def revoke_by_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        reason: str,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """A person revokes: the request's approvers, its sponsor and the agent's owner may."""
        with self.parts.store.read() as tx:
            snap = tx.load(request_id)
        check_party(
            person,
            snap,
            groups=self.parts.policy.current.groups,
            now=now,
            usergroup_members=usergroup_members,
        )
        who = person.email or person.slack_user_id
        return self.revoke(request_id, by=who, reason=reason, now=now)
