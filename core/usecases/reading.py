"""Reads: a request, lists, an approver's dashboard, introspection for resource servers.

A person sees a request only if they are one of its parties (``may_see``); to anyone else it
does not exist, so an answer never tells them that it does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from core.approvals import check_eligible, check_party, eligible_groups
from core.credentials import introspection_response, verify_credential
from core.errors import InvalidToken, NotEligible, NotFound
from core.identity.presented import Presented
from core.model import Approver, Status
from core.policy.compiled import ApproverGroup
from core.snapshots import RequestSnapshot
from core.store import LiveCredential
from core.usecases.parts import Parts


def may_see(
    person: Approver,
    snap: RequestSnapshot,
    *,
    groups: Mapping[str, ApproverGroup],
    now: datetime,
    usergroup_members: Mapping[str, frozenset[str]] | None = None,
) -> bool:
    """The request's parties: its sponsor and its agent's owner (by exact email, any case), and
    the people eligible to approve it under its frozen terms (user-group members included).
    The same people who may revoke it. Fails closed like ``check_eligible``."""
    try:
        check_party(person, snap, groups=groups, now=now, usergroup_members=usergroup_members)
    except NotEligible:
        return False
    return True


class Reading:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def get(self, request_id: str, *, agent_id: str | None = None) -> RequestSnapshot:
        with self.parts.store.read() as tx:
            return tx.load(request_id, agent_id=agent_id)

    def get_as(self, request_id: str, caller: Presented, *, now: datetime) -> RequestSnapshot:
        """The request if it is the agent's: Unauthenticated, or the NotFound of a missing id."""
        with self.parts.store.read() as tx:
            agent = caller.authenticate(tx, now=now)
            return tx.load(request_id, agent_id=agent.id)

    def get_for_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """The request, if ``person`` may see it; otherwise the very NotFound of a missing id."""
        with self.parts.store.read() as tx:
            snap = tx.load(request_id)
        groups = self.parts.policy.current.groups
        if not may_see(person, snap, groups=groups, now=now, usergroup_members=usergroup_members):
            raise NotFound(f"no request {request_id}")
        return snap

    def list_requests(
        self, *, status: list[str] | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[RequestSnapshot]:
        with self.parts.store.read() as tx:
            return tx.list_requests(status=status, agent_id=agent_id, limit=limit)

    def dashboard(
        self,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> tuple[list[RequestSnapshot], list[RequestSnapshot]]:
        """Pending requests this person may decide, and live credentials they approved and may
        still see (a policy change can take someone out of a request's groups)."""
        groups = self.parts.policy.current.groups
        with self.parts.store.read() as tx:
            waiting = tx.list_requests(status=[Status.PENDING.value], limit=500)
            live = tx.list_requests(status=[Status.APPROVED.value, Status.ACTIVE.value], limit=500)
        pending: list[RequestSnapshot] = []
        for snap in waiting:
            try:
                check_eligible(
                    person,
                    groups=eligible_groups(snap.terms, snap.created_at, groups, now),
                    sponsor_email=snap.on_behalf_of,
                    owner_email=snap.owner_email,
                    usergroup_members=usergroup_members,
                )
            except NotEligible:
                continue
            pending.append(snap)
        active = [
            snap
            for snap in live
            if any(v.slack_user_id == person.slack_user_id for v in snap.approvals)
            and may_see(person, snap, groups=groups, now=now, usergroup_members=usergroup_members)
        ]
        return pending, active

    def introspect(
        self, token: str, *, now: datetime, audiences: Collection[str] | None = None
    ) -> dict[str, Any]:
        """RFC 7662: active only when the signature, times and revocation list all agree, and
        the token's ``aud`` is one of ``audiences``: the calling resource server's. Anyone else
        is told ``{"active": false}``, as for a token that does not exist.

        ``audiences=None`` does not check the audience: only for in-process callers, which are
        trusted with every token; the HTTP API always passes the caller's.
        """
        bound = audiences
        try:
            claims = verify_credential(
                token,
                keyring=self.parts.keyring,
                issuer_url=self.parts.issuer_url,
                audience=None,
                now=now,
            )
        except InvalidToken:
            return introspection_response(None, revoked=False, now=now)
        if bound is not None and not _meant_for(claims.get("aud"), bound):
            return introspection_response(None, revoked=False, now=now)
        with self.parts.store.read() as tx:
            issued = tx.live_credential(str(claims.get("jti", "")))
        return introspection_response(claims, revoked=not _as_issued(claims, issued), now=now)


def _as_issued(claims: Mapping[str, Any], issued: LiveCredential | None) -> bool:
    """The token says what stepup issued under its jti: same agent, scope, audience and DPoP
    key binding (``cnf.jkt``, or none), and no later expiry. Only a token signed with a leaked
    key can differ."""
    if issued is None:
        return False
    exp = claims.get("exp")
    cnf = claims.get("cnf")
    if cnf is not None and not (isinstance(cnf, dict) and set(cnf) == {"jkt"}):
        return False
    return (
        (cnf or {}).get("jkt") == issued.jkt
        and _holder(claims) == issued.agent_id
        and claims.get("scope") == issued.scope
        and claims.get("aud") == issued.audience
        and isinstance(exp, int)
        and exp <= int(issued.expires_at.timestamp()) + 1
    )


def _meant_for(aud: object, audiences: Collection[str]) -> bool:
    """Whether the token's ``aud`` (a string or a list of them) names one of ``audiences``."""
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return any(isinstance(value, str) and value in audiences for value in values)


def _holder(claims: Mapping[str, Any]) -> object:
    """The agent holding the token: ``sub``, or for a delegated request (RFC 8693) the current
    actor, ``act.sub``; ``sub`` is then the root agent (docs/delegation.md)."""
    act = claims.get("act")
    if act is None:
        return claims.get("sub")
    return act.get("sub") if isinstance(act, dict) else None
